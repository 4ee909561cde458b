"""OTTL's tokens, as pkg/ottl's lexer (grammar.go, buildLexer) splits a condition.

The rules are tried in otelcol's order at each position and the first that matches wins, so
`0x1f` is bytes, `1.5` a float, `not` an operator and `notes` a lowercase word. `IsMatch` is
read as the words `I`, `s`, `M`, `atch`; the parser joins a function name back together from
words that touch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from otel.ottl.errors import OttlSyntaxError

_RULES = (
    ("BYTES", r"0x[a-fA-F0-9]+"),
    ("FLOAT", r"(?:\d+\.\d*|\d*\.\d+)(?:[eE][-+]?\d+)?"),
    ("INT", r"\d+"),
    ("STRING", r'"(?:\\.|[^\\"])*"'),
    ("NIL", r"\bnil\b"),
    ("NOT", r"\bnot\b"),
    ("OR", r"\bor\b"),
    ("AND", r"\band\b"),
    ("CMP", r"==|!=|>=|<=|>|<"),
    ("ARROW", r"=>"),
    ("ADDSUB", r"\+|-"),
    ("MULDIV", r"/|\*"),
    ("BOOL", r"\b(?:true|false)\b"),
    ("EQUAL", r"="),
    ("LPAREN", r"\("),
    ("RPAREN", r"\)"),
    ("LBRACE", r"\{"),
    ("RBRACE", r"\}"),
    ("COLON", r":"),
    ("PUNCT", r"[,.\[\]]"),
    ("UPPER", r"[A-Z][A-Z0-9_]*"),
    ("LOWER", r"[a-z][a-z0-9_]*"),
    ("SPACE", r"\s+"),
    ("UNDERSCORE", r"\b_\b"),
)
_PATTERNS = tuple((kind, re.compile(pattern)) for kind, pattern in _RULES)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    offset: int  # where the token starts in the condition, from 0
    end: int


def tokenize(text: str) -> list[Token]:
    """The condition's tokens without white space, then an END token."""
    tokens: list[Token] = []
    offset = 0
    while offset < len(text):
        for kind, pattern in _PATTERNS:
            found = pattern.match(text, offset)
            if found and found.end() > offset:
                if kind != "SPACE":
                    tokens.append(Token(kind, found.group(), offset, found.end()))
                offset = found.end()
                break
        else:
            raise OttlSyntaxError(f"unexpected character {text[offset]!r}", offset)
    tokens.append(Token("END", "", len(text), len(text)))
    return tokens


def unquote(literal: str) -> str:
    """A STRING token's value: Go's strconv.Unquote of the double-quoted literal."""
    body, out, index = literal[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escape = body[index + 1]
        simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b",
                  "f": "\f", "v": "\v"}
        if escape in simple:
            out.append(simple[escape])
            index += 2
        elif escape in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[escape]
            digits = body[index + 2:index + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError(f"invalid escape \\{escape}{digits} in {literal}")
            out.append(chr(int(digits, 16)))
            index += 2 + width
        elif escape in "01234567":
            digits = body[index + 1:index + 4]
            if not re.fullmatch(r"[0-7]{3}", digits):
                raise ValueError(f"invalid escape \\{digits} in {literal}")
            out.append(chr(int(digits, 8)))
            index += 4
        else:
            raise ValueError(f"invalid escape \\{escape} in {literal}")
    return "".join(out)
