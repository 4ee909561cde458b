"""Sub-commands whose parser is made when it is first needed: when the command is chosen, or its
help asked for (`edgeagent help queue`).

argparse makes every sub-command's parser when it is added: twenty parsers, each with its help
flag, groups and translated titles, and their hundred options. `edgeagent run` uses two of them,
and making the rest cost its start 3 ms. `Commands.add_parser(name, build=..., ...)` registers
the command as argparse does (its name, aliases and help line in the listing, its program name)
and keeps the rest of the parser's arguments for later; `build(parser)` adds its arguments then.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from edgeagent.cli_listings import FEATURE_GATES, MERGE_APPEND

Build = Callable[[argparse.ArgumentParser], None]


class _Later:
    """A sub-command's parser, not made yet."""

    def __init__(self, make: Callable[..., argparse.ArgumentParser], kwargs: dict[str, Any], build: Build):
        self.make, self.kwargs, self.build = make, kwargs, build

    def parser(self) -> argparse.ArgumentParser:
        parser = self.make(**self.kwargs)
        self.build(parser)
        return parser


class _Parsers(dict[str, Any]):
    """A command's name (or alias) to its parser, made on the first look-up."""

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        parser = super().__getitem__(name)
        if isinstance(parser, _Later):
            later, parser = parser, parser.parser()
            for key in [key for key, value in self.items() if value is later]:  # its name and aliases
                super().__setitem__(key, parser)
        return parser

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default


class Commands(argparse._SubParsersAction):
    """`parser.add_subparsers(action=Commands, ...)`; its `add_parser` takes `build`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._name_parser_map = self.choices = _Parsers()

    def add_parser(self, name: str, build: Build | None = None, **kwargs: Any) -> Any:
        if build is None:
            return super().add_parser(name, **kwargs)
        make = self._parser_class
        self._parser_class = lambda **made_with: _Later(make, made_with, build)  # type: ignore[assignment]
        try:
            return super().add_parser(name, **kwargs)
        finally:
            self._parser_class = make


def _feature_gates(text: str) -> list[str]:
    """One --feature-gates value: gate ids, comma-separated, each known (otelcol refuses an unknown one)."""
    gates = [gate.strip() for gate in text.split(",") if gate.strip()]
    unknown = [gate for gate in gates if gate.lstrip("+-") not in FEATURE_GATES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no such feature gate: {', '.join(unknown)}; edgeagent has "
            + "; ".join(f"{gate} ({what})" for gate, what in FEATURE_GATES.items()))
    return gates


def config_flags(command: argparse.ArgumentParser, upstream: bool = True, top: bool = False) -> None:
    """--config, --set and --upstream, the same on every verb that reads a config."""
    default: list[str] | str = [] if top else argparse.SUPPRESS
    command.add_argument("--config", action="append", default=default, metavar="URI",
                         help="config source, repeatable; merged in order (maps merged key by key, lists and "
                              "other values replaced): a path, file:PATH, env:VAR (YAML in the variable), "
                              "yaml:INLINE or an http(s):// URL. Default: the embedded default config")
    command.add_argument("--set", action="append", default=default, metavar="KEY=VALUE",
                         help="override one value after every --config, as otelcol: "
                              "--set exporters::otlp_http::timeout=10s (a '.' in KEY also separates levels)")
    command.add_argument("--feature-gates", action="append", type=_feature_gates, default=default, metavar="IDS",
                         help=f"comma-separated feature gates to turn on (id or +id) or off (-id), as otelcol; "
                              f"edgeagent has one: {MERGE_APPEND}")
    if upstream:
        command.add_argument("--upstream", default=None if top else argparse.SUPPRESS, metavar="URL",
                             help="sets EDGEAGENT_UPSTREAM, the OTLP/HTTP upstream the embedded default sends to")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of records") from None
    if value < 1:  # 0 is "no limit" to the queue's reader: every record, held at once
        raise argparse.ArgumentTypeError(f"{text!r}: the count of records must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def go_bool(text: str) -> bool:
    """A Go bool flag's value (strconv.ParseBool), as otelcol's --validate=false."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def target_flags(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of a command that asks the running agent (or reads its queue files beside it)."""
    config_flags(command, upstream=False)
    command.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS,
                         help="the agent's state directory, where its control socket is (default: "
                              "$STATE_DIRECTORY; else /var/lib/edgeagent as root or its owner; else "
                              "~/.local/share/edgeagent)")
    command.add_argument("--json", action="store_true", help="print JSON")
    command.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                         help="how long to wait for the running agent's answer (default: 60)")
    return command


def queue_commands(queue: argparse.ArgumentParser) -> None:
    """`queue`'s own commands (its handler reads which was chosen)."""
    queue_sub = queue.add_subparsers(dest="queue_action", required=True)
    target_flags(queue_sub.add_parser("stats", help="entries, items, bytes and oldest age per queue"))
    target_flags(queue_sub.add_parser("peek", help="the first N records of each queue")).add_argument(
        "n", type=_count, nargs="?", default=10)
    export = target_flags(queue_sub.add_parser("export", help="write every queued request"))
    export.add_argument("--format", choices=("otlp-json", "otlp-proto"), default="otlp-json",
                        help="otlp-json: one OTLP/JSON request per line; otlp-proto: each request after its "
                             "4-byte big-endian length")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    purge = target_flags(queue_sub.add_parser("purge", help="delete queued data (counted as dropped)"))
    purge.add_argument("--queue", help="only this queue (exporter/signal)")
    purge.add_argument("--yes", action="store_true", help="confirm")
    target_flags(queue_sub.add_parser("compact", help="compact the queue files now"))
    dead = queue_sub.add_parser("dead-letter", help="batches the upstream rejected permanently")
    dead_sub = dead.add_subparsers(dest="dead_letter_action", required=True)
    target_flags(dead_sub.add_parser("list", help="list dead letters with the upstream's answer"))
    dead_export = target_flags(dead_sub.add_parser("export", help="write dead letters as OTLP/JSON lines"))
    dead_export.add_argument("--output", "-o")
    replay = target_flags(dead_sub.add_parser("replay", help="queue dead letters again (all, or the given seqs)"))
    replay.add_argument("seq", type=int, nargs="*")
    dead_purge = target_flags(dead_sub.add_parser("purge", help="delete dead letters (all, or the given seqs)"))
    dead_purge.add_argument("seq", type=int, nargs="*")
    dead_purge.add_argument("--yes", action="store_true", help="confirm")
