"""What `featuregate` and `components` print: this build's feature gates and component types, in
otelcol's shapes, so scripts written against otelcol's output read ours."""

from __future__ import annotations

import argparse
import sys

import yaml

from edgeagent import __version__

EXIT_ERROR = 1

MERGE_APPEND = "confmap.enableMergeAppendOption"
FEATURE_GATES = {MERGE_APPEND: "append the lists service::extensions and service::**::receivers and "
                               "::exporters when --config sources merge (otelcol's alpha gate)"}


def cmd_featuregate(args: argparse.Namespace) -> int:
    """`featuregate [ID]`, as otelcol's: a table of every gate, or the fields of the one named.
    The state shown is the default: --feature-gates turns a gate on for the command it is given to."""
    if args.gate is not None:
        if args.gate not in FEATURE_GATES:
            print(f'Error: feature "{args.gate}" not found', file=sys.stderr)
            return EXIT_ERROR
        print(f"Feature: {args.gate}\nEnabled: false\nStage: Alpha\nDescription: {FEATURE_GATES[args.gate]}")
        return 0
    rows = [("ID", "Enabled", "Stage", "Description")]
    rows += [(gate, "false", "Alpha", description) for gate, description in FEATURE_GATES.items()]
    widths = [max(len(row[column]) for row in rows) + 2 for column in range(3)]
    for row in rows:  # as Go's tabwriter with a padding of 2
        print("".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + row[3])
    return 0


SIGNALS = ("logs", "metrics", "traces")
# every component of this build supports what it supports at one level, this one (otelcol's words)
STABILITY = "Beta"


def _stability(kind: str, signals: tuple[str, ...]) -> dict[str, str]:
    """otelcol's `stability` map: per signal (a connector: per pair, `traces-to-traces`; an extension:
    `extension`), `Undefined` for what the type does not support."""
    if kind == "extensions":
        return {"extension": STABILITY}
    if kind == "connectors":
        return {f"{source}-to-{target}": STABILITY if source == target and source in signals else "Undefined"
                for source in SIGNALS for target in SIGNALS}
    return {signal: STABILITY if signal in signals else "Undefined" for signal in SIGNALS}


def cmd_components(args: argparse.Namespace) -> int:
    """Every component type by kind with its module and stability, as otelcol's `components` lists
    them; a type's deprecated alias is named beside it (otelcol leaves aliases out)."""
    from edgeagent import registry
    from edgeagent.config.expand import SCHEMES

    out: dict[str, object] = {"buildinfo": {"command": "edgeagent", "description": "OpenTelemetry edge buffering "
                                            "agent", "version": __version__}}
    for kind, factories in registry.FACTORIES.items():
        entries = []
        for type_name in sorted(factories):
            module = f"{registry.module(kind, type_name)} {__version__}"
            entry: dict[str, object] = {"name": type_name, "module": module,
                                        "stability": _stability(kind, factories[type_name].signals)}
            alias = registry.deprecated_alias(kind, type_name)
            if alias:
                entry["deprecated_alias"] = alias
            entries.append(entry)
        out[kind] = entries
    # the schemes --config and ${scheme:...} accept
    out["providers"] = [{"scheme": scheme, "module": f"edgeagent.config.expand {__version__}"} for scheme in SCHEMES]
    print(yaml.safe_dump(out, sort_keys=False, default_flow_style=False), end="")
    return 0
