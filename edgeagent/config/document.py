"""From config sources to one raw document: bounded YAML parsing, otelcol's URIs, merging and `--set`.

Parsing is bounded because a config may come from anyone who can write a file or an
environment variable: PyYAML's safe loader expands aliases without limit (nine aliases of
nine aliases are a billion nodes to walk) and lets a duplicate key silently win. Here the
document size, the nesting depth, the alias count and the expanded node count are capped,
and a duplicate key is an error at its YAML path, as otelcol refuses it.

Sources follow otelcol's confmap: `--config` takes `file:PATH` (or a bare path), `env:VAR` (the
variable's value is YAML), `yaml:INLINE` or an `http://` or `https://` URL (remote.py);
documents are merged in order, maps deep merged and every other value (lists included) replaced;
a key written `a::b` is the nested key b under a; `--set a::b=value` (or `a.b=value`) is the
inline document `a::b: value`, merged after every `--config`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgeagent.config import remote

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 1000
MAX_NODES = 200_000  # counted with every alias expanded; a large real config has a few thousand
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class ConfigError(Exception):
    """The config is invalid; `errors` holds every (path, message) found, and `warnings` what reading it
    warned of first (an unset variable behind an empty value), to be shown before the errors."""

    def __init__(self, errors: list[tuple[str, str]], warnings: list[str] | None = None):
        self.errors = errors
        self.warnings = warnings or []
        super().__init__("\n".join(f"{path}: {message}" if path else message for path, message in errors))


class _LimitExceeded(Exception):
    def __init__(self, message: str, mark: Any = None):
        self.message = message
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing documents nested deeper than MAX_DEPTH or with more than MAX_ALIASES aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitExceeded(f"more than {MAX_ALIASES} aliases (*name); the limit is {MAX_ALIASES}",
                                     self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitExceeded(f"nested deeper than {MAX_DEPTH} levels; the limit is {MAX_DEPTH}",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# ---- plain scalars as yaml.v3 resolves them (otelcol's confmap) ------------------------------------
# YAML 1.2's core schema, not PyYAML's 1.1: on/off/yes/no and 1:30 stay text, a date stays text
# (yaml.v3 keeps a timestamp a string when decoding into `any`), and numbers are what Go's
# strconv reads once `_` is removed: 0x, 0o, 0b and a leading-0 octal; 1e3 is a float.
_BoundedLoader.yaml_implicit_resolvers = {}
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                     ["~", "n", "N", ""])
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                     re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+."))
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+0-9.]"), list("-+0123456789."))
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])
_GO_INT = re.compile(r"^([-+]?)(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")  # yaml.v3's yamlStyleFloat


def _number(loader: _BoundedLoader, node: ScalarNode) -> int | float | str:
    """A plain scalar starting like a number: an int or float as yaml.v3 reads it, else the text itself."""
    text = str(node.value)
    plain = text if text.startswith(".") else text.replace("_", "")
    match = _GO_INT.match(plain)
    if match:
        sign, digits = match.groups()
        base = {"x": 16, "b": 2, "o": 8}.get(digits[1:2].lower(), 8 if digits.startswith("0") else 10)
        body = digits[2:] if base != 10 and digits[1:2].isalpha() else digits
        value = int(body or "0", base) * (-1 if sign == "-" else 1)
        if -2**63 <= value < 2**64:
            return value
    return float(plain) if _YAML_FLOAT.match(plain) else text


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _number)


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document as Python values; ConfigError for bad syntax, a limit exceeded or a duplicate key."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise ConfigError([(source, f"the document is {size / 2**20:.1f} MiB; the limit is "
                                    f"{MAX_DOCUMENT_BYTES // 2**20} MiB for a config")])
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise ConfigError(duplicates)
        return loader.construct_document(node)
    except _LimitExceeded as exc:
        raise ConfigError([(_where(source, exc.mark), f"YAML refused: {exc.message}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(_where(source, mark), f"YAML syntax error: {problem}")]) from None
    except (ValueError, TypeError, RecursionError) as exc:  # a constructor's own error, e.g. bad base64
        raise ConfigError([(source, f"YAML value refused: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _where(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _check_expanded_size(root: Node) -> None:
    """Count nodes as if every alias were expanded (each shared node counted once per use), without expanding."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise _LimitExceeded("an alias (*name) refers to a block that contains it; a config cannot be "
                                 "recursive", node.start_mark)
        open_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        else:
            total = 1
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        if total > MAX_NODES:
            raise _LimitExceeded(f"aliases expand to more than {MAX_NODES} nodes; the limit is {MAX_NODES}",
                                 node.start_mark)
        return total

    size(root)


def _duplicate_keys(root: Node) -> list[tuple[str, str]]:
    """Every key written twice in one mapping, at its YAML path. `<<` merges may be overridden, as YAML allows."""
    errors: list[tuple[str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((child, path + (str(index),)) for index, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first_line: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else None
                if name is not None and key.tag != "tag:yaml.org,2002:merge":
                    if name in first_line:
                        errors.append(("::".join(path + (name,)), f"duplicate key {name!r} (lines "
                                       f"{first_line[name]} and {key.start_mark.line + 1}); keep one of them"))
                    else:
                        first_line[name] = key.start_mark.line + 1
                stack.append((value, path + (str(name),)))
    return sorted(errors)


# ---- sources, merging and --set --------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A document and where it came from, for error messages, with any warning reading it gave."""
    label: str
    document: Any
    warnings: tuple[str, ...] = ()


def unset_warning(name: str, paths: list[str]) -> str:
    """otelcol's "Configuration references unset environment variable", saying where and what to do."""
    where = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return (f"environment variable {name} is not set: it reads as empty in {where}; set it, or give "
            f"a default as ${{env:{name}:-value}}")


def read_uri(uri: str, environ: Mapping[str, str]) -> Source:
    """`file:PATH`, a bare path, `env:VAR[:-default]`, `yaml:INLINE` or an http(s) URL, parsed (otelcol's
    providers)."""
    match = _SCHEME.match(uri)
    scheme = match.group(1) if match and len(match.group(1)) > 1 else ""  # c:\ is a path, not a scheme
    if scheme == "yaml":
        return Source(uri if len(uri) <= 60 else uri[:57] + "...", parse_yaml(uri[len("yaml:"):], "yaml:"))
    if scheme == "env":
        name, has_default, default = uri[len("env:"):].partition(":-")
        if not _ENV_NAME.match(name):
            raise ConfigError([("--config", f"{uri!r}: {name!r} is not an environment variable name")])
        value = environ.get(name)
        if value is None and not has_default:  # otelcol's resolver: an empty config, merged as any other
            return Source(uri, None, (f"environment variable {name} is not set: --config {uri} reads as an empty "
                                      f"config; set it, or give a default as env:{name}:-VALUE",))
        return Source(uri, parse_yaml(default if value is None else value, uri))
    if scheme in remote.SCHEMES:
        try:
            return Source(uri, parse_yaml(remote.fetch(uri, MAX_DOCUMENT_BYTES), uri))
        except remote.FetchError as exc:
            raise ConfigError([("--config", f"{uri}: {exc}")]) from None
    if scheme and scheme != "file":
        raise ConfigError([("--config", f"{uri!r}: unsupported scheme {scheme!r}; use file:, env:, yaml:, http: "
                                        f"or https:")])
    path = uri[len("file:"):] if scheme == "file" else uri
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file {path}: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from exc
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError([(path, f"the file is over {MAX_DOCUMENT_BYTES // 2**20} MiB; the limit is "
                                  f"{MAX_DOCUMENT_BYTES // 2**20} MiB for a config")])
    return Source(path, parse_yaml(text, path))


def set_flag(override: str) -> Source:
    """otelcol's `--set key::sub=value`: the document `key::sub: value` (a `.` in the key is a `::` too)."""
    key, sep, value = override.partition("=")
    key = key.strip().replace(".", "::")
    if not sep or not [part for part in key.split("::") if part]:
        raise ConfigError([("--set", f"{override!r} is not key::subkey=value (or key.subkey=value)")])
    parsed = parse_yaml(value.strip(), "--set") if value.strip() else None
    return Source(f"--set {key}", {key: parsed})


def unflatten(node: Any) -> Any:
    """Keys written `a::b` become b nested under a, as otelcol reads every config."""
    if isinstance(node, list):
        return [unflatten(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[Any, Any] = {}
    for key, value in node.items():
        value = unflatten(value)
        parts = key.split("::") if isinstance(key, str) and "::" in key else [key]
        for part in reversed(parts[1:]):
            value = {part: value}
        head = parts[0]  # merged into its own key: merging into `out` copied the whole map once per key
        out[head] = merge(out[head], value) if head in out else value
    return out


def merge(base: Any, override: Any, append: bool = False, path: tuple[str, ...] = ()) -> Any:
    """otelcol's merge: maps are merged key by key, anything else (a list too) is replaced. With
    `append` (the gate confmap.enableMergeAppendOption), the lists service::extensions and
    service::**::receivers and ::exporters are appended, each item kept once (its mergeAppend)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value, append, path + (str(key),)) if key in base else value
        return merged
    if append and isinstance(base, list) and isinstance(override, list) and _appended(path):
        combined = list(base)
        for item in override:
            if item not in combined:
                combined.append(item)
        return combined
    return override


def _appended(path: tuple[str, ...]) -> bool:
    return path == ("service", "extensions") or (
        len(path) >= 3 and path[0] == "service" and path[-1] in ("receivers", "exporters"))


def resolve(sources: list[Source], merge_append: bool = False) -> Any:
    """The documents merged in order; a source that is not a mapping is an error naming it."""
    document: Any = {}
    errors = []
    for source in sources:
        if source.document is None:
            continue
        if not isinstance(source.document, dict):
            errors.append((source.label, "the config must be a YAML mapping with receivers, exporters and service"))
            continue
        document = merge(document, unflatten(source.document), merge_append)
    if errors:
        raise ConfigError(errors)
    return document
