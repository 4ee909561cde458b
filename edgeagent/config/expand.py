"""otelcol's `${...}` references in config values (confmap's expand.go), with its providers.

`${env:NAME}` (or `${NAME}`), `${env:NAME:-default}` (the default only when NAME is unset;
`${NAME:-default}` is accepted too, though otelcol refuses it), `${file:PATH}`, `${yaml:INLINE}`
and `${http://...}` or `${https://...}` (the body of a GET: remote.py); any other scheme is an
error naming it. What a provider returns is read as YAML: a value that is exactly one reference
takes that YAML's type (a list, a map, a number), while a reference inside longer text is
replaced by the text verbatim (a file's trailing newline included, as otelcol does). The
innermost, first reference is expanded first and passes repeat until nothing changes, so a
reference may build another's name or yield one; the passes and each value's size are bounded.
`$$` is a literal `$`: `$${env:X}` is never expanded, and every `$$` becomes `$` once all passes
are done, in text that came from a variable or a file too (otelcol's escapeDollarSigns). A
whole-value reference keeps its text beside its YAML value, for the decoder to give a key that
takes text the text and any other key the value (otelcol's ExpandedValue): a scalar is a
`Reference` (the text, carrying the value), a map or list a `ReferenceMap` or `ReferenceList`
(the value, carrying the text), its `a::b` keys nested as the config's are. An unset variable
without a default is empty (otelcol's envprovider), with one warning per variable naming it and
where it is read: that warning, shown before any error the empty value causes, leads back to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeagent.config import remote
from edgeagent.config.document import MAX_DOCUMENT_BYTES, ConfigError, parse_yaml, unflatten, unset_warning
from edgeagent.configdecode import Reference, ReferenceList, ReferenceMap

SCHEMES = ("env", "file", "http", "https", "yaml")
MAX_PASSES = 1000  # otelcol's bound; a reference that yields itself stops here
MAX_REFERENCES = 5000  # per config; a real one has tens
MAX_TEXT_READ = 4 * MAX_DOCUMENT_BYTES
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # otelcol's envvar.ValidationPattern
_ENV_DEFAULT = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*:-")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(.*)$", re.DOTALL)


class ExpansionError(ValueError):
    pass


def plain(node: Any) -> Any:
    """The tree with every Reference as its text and plain maps and lists, for printing."""
    if isinstance(node, str):
        return str(node)
    if isinstance(node, list):
        return [plain(item) for item in node]
    if isinstance(node, dict):
        return {key: plain(item) for key, item in node.items()}
    return node


@dataclass(frozen=True)
class _Expanded:
    """A whole-value reference: the parsed YAML and the text it came from (a string field takes the text)."""
    value: Any
    original: str


def expand_tree(
    node: Any, path: tuple[str, ...], environ: Mapping[str, str], errors: list[tuple[tuple[str, ...], str]],
    warnings: list[str],
) -> Any:
    """Expand every string value in a parsed YAML tree; collect errors with their paths instead of stopping,
    and a warning for each unset variable read without a default."""
    expander = _Expander(environ)
    expanded = expander.tree(node, path, errors)
    warnings.extend(unset_warning(name, list(paths)) for name, paths in expander.unset.items())
    return expanded


class _Expander:
    """One config's expansion; the references it follows and the text they read are bounded, since
    a file that includes itself twice doubles the tree at every pass."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.references = 0
        self.text_read = 0
        self.unset: dict[str, dict[str, None]] = {}  # each unset variable read without a default: where, in order
        self.at = ""

    def tree(self, node: Any, path: tuple[str, ...], errors: list[tuple[tuple[str, ...], str]]) -> Any:
        if isinstance(node, dict):
            return {key: self.tree(value, path + (str(key),), errors) for key, value in node.items()}
        if isinstance(node, list):
            return [self.tree(value, path + (str(index),), errors) for index, value in enumerate(node)]
        if isinstance(node, str) and "$" in node:
            self.at = "::".join(path) or "the config"
            try:
                return _finish(self.recursively(node))
            except ExpansionError as exc:
                errors.append((path, str(exc)))
                return node
        return node

    def recursively(self, value: Any) -> Any:
        for _ in range(MAX_PASSES):
            value, changed = self.value(value)
            if not changed:
                return value
        raise ExpansionError(f"references still expand after {MAX_PASSES} passes: a variable or file refers to "
                             f"itself")

    def value(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, _Expanded):
            inner, changed = self.value(value.value)
            if isinstance(inner, (_Expanded, str)):
                return inner, changed
            try:
                original, original_changed = self.value(value.original)
            except ExpansionError:
                return inner, changed
            if isinstance(original, str):
                return _Expanded(inner, original), changed or original_changed
            return inner, changed
        if isinstance(value, str):
            if "${" not in value or "}" not in value:
                return value, False
            return self.find_and_expand(value)
        if isinstance(value, list):
            items = [self.value(item) for item in value]
            return [item for item, _ in items], any(changed for _, changed in items)
        if isinstance(value, dict):
            pairs = {key: self.value(item) for key, item in value.items()}
            return {key: item for key, (item, _) in pairs.items()}, any(changed for _, changed in pairs.values())
        return value, False

    def find_and_expand(self, text: str) -> tuple[Any, bool]:
        reference = _find_reference(text)
        if not reference:
            return text, False
        value, original = self.retrieve(reference[2:-1])
        if reference == text:
            return _Expanded(value, original), True
        expanded = text.replace(reference, original)
        if len(expanded) > MAX_DOCUMENT_BYTES:
            raise ExpansionError(f"expanding {reference} makes the value longer than "
                                 f"{MAX_DOCUMENT_BYTES // 2**20} MiB; the limit is the config's")
        return expanded, True

    def retrieve(self, uri: str) -> tuple[Any, str]:
        """A reference's parsed YAML and its text (otelcol's expandURI and NewRetrievedFromYAML)."""
        if ":" not in uri or _ENV_DEFAULT.match(uri):  # otelcol refuses ${NAME:-d}; it was accepted here before
            uri = f"env:{uri}"
        match = _URI.match(uri)
        if match is None:
            raise ExpansionError(f"${{{uri}}} is not a reference: write ${{env:NAME}}, ${{file:PATH}} or "
                                 f"${{yaml:TEXT}}")
        scheme, opaque = match.groups()
        if "$" in opaque:
            raise ExpansionError(f"the reference ${{{uri}}} contains '$', which otelcol does not allow inside one")
        if scheme == "env":
            text = _env(opaque, self.environ)
            if text is None:
                self.unset.setdefault(opaque, {})[self.at] = None  # without a default, opaque is the name
                text = ""
        elif scheme == "file":
            text = _file(opaque)
        elif scheme == "yaml":
            text = opaque
        elif scheme in remote.SCHEMES:
            try:
                text = remote.fetch(uri, MAX_DOCUMENT_BYTES)
            except remote.FetchError as exc:
                raise ExpansionError(f"${{{uri}}}: {exc}") from None
        else:
            raise ExpansionError(f"${{{uri}}}: the {scheme!r} scheme is not supported; supported: "
                                 f"{', '.join(f'${{{name}:...}}' for name in SCHEMES)}")
        self.references += 1
        self.text_read += len(text)
        if self.references > MAX_REFERENCES or self.text_read > MAX_TEXT_READ:
            raise ExpansionError(f"the config's references expand more than {MAX_REFERENCES} times or read more "
                                 f"than {MAX_TEXT_READ // 2**20} MiB; a file or variable includes itself")
        try:
            parsed = parse_yaml(text, scheme)
        except ConfigError:  # not YAML (or past a YAML limit): the text itself, as otelcol falls back to
            return text, text
        return (text if isinstance(parsed, str) else parsed), text


def _find_reference(text: str) -> str:
    """The innermost reference ending at the first `}`, or "" when there is none or it is escaped by `$$`."""
    begin = 0  # otelcol recurses on the text after a `}` with no `${` before it; an offset is that text
    while True:
        close = text.find("}", begin)
        if close < 0:
            return ""
        start = text.rfind("${", begin, close + 1)
        if start >= 0:
            dollars = start - begin - len(text[begin:start].rstrip("$"))
            return "" if dollars % 2 else text[start:close + 1]
        begin = close + 1


def _env(opaque: str, environ: Mapping[str, str]) -> str | None:
    """The variable's value, else its default; None when it is unset and has none."""
    name, has_default, default = opaque.partition(":-")
    if not _ENV_NAME.match(name):
        raise ExpansionError(f"${{env:{opaque}}}: {name!r} is not an environment variable name "
                             f"(letters, digits and _, not starting with a digit)")
    value = environ.get(name)
    if value is not None:
        return value
    return default if has_default else None


def _file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ExpansionError(f"${{file:{path}}}: cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ExpansionError(f"${{file:{path}}}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ExpansionError(f"${{file:{path}}}: the file is over {MAX_DOCUMENT_BYTES // 2**20} MiB; the limit is "
                             f"{MAX_DOCUMENT_BYTES // 2**20} MiB for a config")
    return text


def _finish(value: Any) -> Any:
    """`$$` to `$` everywhere, then each whole-value reference as its map or list, or else as a Reference."""
    if isinstance(value, _Expanded):
        text = value.original.replace("$$", "$")
        if isinstance(value.value, (dict, list)):  # nested before the references in it are finished
            container = (ReferenceMap if isinstance(value.value, dict) else ReferenceList)(
                _finish(unflatten(value.value)))
            container.text = text
            return container
        inner = _finish(value.value)
        return text if isinstance(inner, str) else Reference(text, inner)
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [_finish(item) for item in value]
    if isinstance(value, dict):
        return {key: _finish(item) for key, item in value.items()}
    return value
