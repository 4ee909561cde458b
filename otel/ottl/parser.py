"""OTTL conditions parsed as pkg/ottl's grammar (grammar.go) reads them, into otel.ottl.ast.

    condition  := term ("or" term)*
    term       := boolean ("and" boolean)*
    boolean    := "not"? (comparison | "true" | "false" | Converter(...) | "(" condition ")")
    comparison := value ("==" | "!=" | "<" | "<=" | ">" | ">=") value
    value      := nil | string | bytes | bool | ENUM | list | arithmetic over int, float,
                  path and Converter(...)

As in otelcol, the alternatives of `boolean` are tried in that order: `(a + 1) > 2` is a
comparison, `(a > 2)` a sub-condition, and a value on its own (`attributes["k"]`) is no
condition. When no alternative fits, the error is the one found furthest into the text.
Maps, lambdas, editors and keys computed by an expression are refused with what is supported.
"""

from __future__ import annotations

from typing import NoReturn

from otel.ottl import ast
from otel.ottl.errors import OttlSyntaxError
from otel.ottl.lexer import Token, tokenize, unquote

_NAME = ("UPPER", "LOWER")


def parse(text: str) -> ast.Boolean:
    """The condition's tree; OttlSyntaxError with the offset when it does not parse."""
    parser = _Parser(tokenize(text))
    try:
        condition = parser.condition()
    except RecursionError:
        raise OttlSyntaxError("the condition is nested too deeply", parser.peek().offset) from None
    if parser.peek().kind != "END":
        parser.fail(f"unexpected {parser.describe(parser.peek())}")
    return condition


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.index = 0
        self.furthest: OttlSyntaxError | None = None

    # tokens

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        token = self.peek()
        if token.kind == kind and (text is None or token.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str, what: str) -> Token:
        token = self.accept(kind, text)
        if token is None:
            self.fail(f"expected {what}, found {self.describe(self.peek())}")
        return token

    @staticmethod
    def describe(token: Token) -> str:
        return "the end of the condition" if token.kind == "END" else repr(token.text)

    def fail(self, message: str, offset: int | None = None) -> NoReturn:
        error = OttlSyntaxError(message, self.peek().offset if offset is None else offset)
        if self.furthest is not None and self.furthest.offset > error.offset:
            raise self.furthest
        raise error

    def attempt(self, rule):
        """rule() from here, or None (back where it started) when it fails; its error is kept if
        it got furthest."""
        start = self.index
        try:
            return rule()
        except OttlSyntaxError as error:
            if self.furthest is None or error.offset > self.furthest.offset:  # the first at a tie
                self.furthest = error
            self.index = start
            return None

    # booleans

    def condition(self) -> ast.Boolean:
        offset = self.peek().offset
        terms = [self.term()]
        while self.accept("OR"):
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else ast.Or(tuple(terms), offset)

    def term(self) -> ast.Boolean:
        offset = self.peek().offset
        values = [self.boolean()]
        while self.accept("AND"):
            values.append(self.boolean())
        return values[0] if len(values) == 1 else ast.And(tuple(values), offset)

    def boolean(self) -> ast.Boolean:
        negation = self.accept("NOT")
        node = self.attempt(self.comparison) or self.attempt(self.constant) or self.attempt(self.sub_condition)
        if node is None:
            if self.furthest is not None:
                raise self.furthest
            self.fail(f"expected a condition, found {self.describe(self.peek())}")
        self.furthest = None  # the failed alternatives do not matter once one fits
        return ast.Not(node, negation.offset) if negation else node

    def comparison(self) -> ast.Compare:
        left = self.value()
        op = self.accept("CMP")
        if op is None:
            self.fail(f"expected a comparison operator (==, !=, <, <=, >, >=), found {self.describe(self.peek())}")
        return ast.Compare(op.text, left, self.value(), op.offset)

    def constant(self) -> ast.Boolean:
        token = self.accept("BOOL")
        if token:
            return ast.BoolConst(token.text == "true", token.offset)
        if self.peek().kind == "UPPER" and self._converter_ahead():
            return self.call()
        self.fail(f"expected a condition, found {self.describe(self.peek())}")

    def sub_condition(self) -> ast.Boolean:
        self.expect("LPAREN", "(", "'('")
        inner = self.condition()
        self.expect("RPAREN", ")", "')'")
        return inner

    # values

    def value(self) -> ast.Value:
        token = self.peek()
        if token.kind == "NIL":
            self.take()
            return ast.Literal(None, token.offset)
        if token.kind == "STRING":
            return ast.Literal(self.string(), token.offset)
        if token.kind == "BYTES":
            self.take()
            digits = token.text[2:]
            if len(digits) % 2:
                self.fail(f"bytes literal {token.text} has an odd number of hex digits", token.offset)
            return ast.Literal(bytes.fromhex(digits), token.offset)
        if token.kind == "BOOL":
            self.take()
            return ast.Literal(token.text == "true", token.offset)
        if token.kind == "UPPER" and not self._converter_ahead():
            self.take()
            if self.peek().kind == "LOWER":
                self.fail(f"unexpected {self.describe(self.peek())}")
            return ast.Enum(token.text, token.offset)
        if token.kind == "PUNCT" and token.text == "[":
            return self.list_value()
        if token.kind == "LBRACE":
            self.fail("map literals ({...}) are not supported in conditions here")
        return self.arithmetic()

    def list_value(self) -> ast.ListValue:
        start = self.take()
        items: list[ast.Value] = []
        if not self.accept("PUNCT", "]"):
            items.append(self.value())
            while self.accept("PUNCT", ","):
                items.append(self.value())
            self.expect("PUNCT", "]", "',' or ']'")
        return ast.ListValue(tuple(items), start.offset)

    def arithmetic(self) -> ast.Value:
        left = self.product()
        while self.peek().kind == "ADDSUB":
            op = self.take()
            left = ast.Math(op.text, left, self.product(), op.offset)
        return left

    def product(self) -> ast.Value:
        left = self.factor()
        while self.peek().kind == "MULDIV":
            op = self.take()
            left = ast.Math(op.text, left, self.factor(), op.offset)
        return left

    def factor(self) -> ast.Value:
        sign = self.accept("ADDSUB")
        token = self.peek()
        operand: ast.Value
        if token.kind == "LPAREN":
            self.take()
            operand = self.arithmetic()
            self.expect("RPAREN", ")", "')'")
        elif token.kind in ("INT", "FLOAT"):
            number: int | float = self.integer() if token.kind == "INT" else float(self.take().text)
            if sign is not None and sign.text == "-":
                return ast.Literal(-number, sign.offset)
            operand = ast.Literal(number, token.offset)
        elif token.kind == "UPPER" and self._converter_ahead():
            operand = self.call()
        elif token.kind == "LOWER":
            operand = self.path()
        else:
            self.fail(f"expected a value, found {self.describe(token)}")
        if sign is not None and sign.text == "-":
            return ast.Negate(operand, sign.offset)
        return operand

    def string(self) -> str:
        token = self.take()
        try:
            return unquote(token.text)
        except ValueError as exc:
            self.fail(str(exc), token.offset)

    def integer(self) -> int:
        token = self.take()
        number = int(token.text)
        if number >= 2**63:
            self.fail(f"integer {token.text} is out of range (int64)", token.offset)
        return number

    def _converter_ahead(self) -> bool:
        ahead = 1
        while self.peek(ahead).kind in _NAME:
            ahead += 1
        return self.peek(ahead).kind == "LPAREN"

    def call(self) -> ast.Call:
        start = self.peek()
        name = []
        while self.peek().kind in _NAME:
            name.append(self.take().text)
        self.expect("LPAREN", "(", "'('")
        args: list[ast.Value] = []
        named: list[tuple[str, ast.Value]] = []
        if not self.accept("RPAREN"):
            while True:
                if self.peek().kind == "LOWER" and self.peek(1).kind == "EQUAL":
                    key = self.take().text
                    self.take()
                    named.append((key, self.value()))
                else:
                    if named:
                        self.fail("a positional argument cannot follow a named one")
                    args.append(self.value())
                if self.accept("RPAREN"):
                    break
                self.expect("PUNCT", ",", "',' or ')'")
        if self.peek().kind == "PUNCT" and self.peek().text == "[":
            self.fail("indexing a converter's result is not supported here")
        return ast.Call("".join(name), tuple(args), tuple(named), start.offset)

    def path(self) -> ast.Path:
        start = self.peek()
        names = [self.take().text]
        keys: list[str | int] = []
        while True:
            while self.peek().kind == "PUNCT" and self.peek().text == "[":
                keys.append(self.key())
            if not (self.peek().kind == "PUNCT" and self.peek().text == "."):
                break
            if keys:
                self.fail("a path continues after an index: not supported here")
            self.take()
            token = self.peek()
            if token.kind != "LOWER":
                self.fail(f"expected a path segment, found {self.describe(token)}")
            names.append(self.take().text)
        return ast.Path(tuple(names), tuple(keys), start.offset)

    def key(self) -> str | int:
        self.take()  # [
        token = self.peek()
        if token.kind == "STRING":
            key: str | int = self.string()
        elif token.kind == "INT":
            key = self.integer()
        else:
            self.fail("an index must be a string or an integer literal here")
        self.expect("PUNCT", "]", "']'")
        return key
