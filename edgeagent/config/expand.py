"""Environment expansion as otelcol does it: ${env:VAR}, ${VAR}, ${env:VAR:-default}, and $$ for a literal $."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ExpansionError(ValueError):
    pass


def expand_string(text: str, environ: Mapping[str, str]) -> str:
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            missing.append(name)
            return ""
        return value

    result = _REFERENCE.sub(substitute, text)
    if missing:
        names = ", ".join(missing)
        raise ExpansionError(
            f"environment variable {names} is not set: set it, or give a default as ${{env:{missing[0]}:-value}}"
        )
    return result


def expand_tree(
    node: Any, path: tuple[str, ...], environ: Mapping[str, str], errors: list[tuple[tuple[str, ...], str]]
) -> Any:
    """Expand every string value in a parsed YAML tree; collect errors with their paths instead of stopping."""
    if isinstance(node, dict):
        return {key: expand_tree(value, path + (str(key),), environ, errors) for key, value in node.items()}
    if isinstance(node, list):
        return [expand_tree(value, path + (str(index),), environ, errors) for index, value in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        try:
            return expand_string(node, environ)
        except ExpansionError as exc:
            errors.append((path, str(exc)))
            return node
    return node


