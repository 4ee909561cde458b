"""How the status and queue commands print their answers as text (--json prints them as they are)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any


def print_status(status: dict[str, Any], running: bool) -> None:
    print(f"edgeagent {'is running' if running else 'is not running'}")
    for exporter, state in status["exporters"].items():
        print(f"  exporter {exporter}: upstream {state['upstream']}" +
              (f" ({state['endpoint']})" if state.get("endpoint") else "") +
              (f", last send failed: {state['problem']}" if state.get("problem") else ""))
    for connector, state in status.get("connectors", {}).items():
        print(f"  connector {connector}: level {state['active_level']} ({', '.join(state['active_pipelines'])}), "
              f"upstream {state['upstream']}")
    print(f"  backlog: {status['backlog_items']} items in {sum(q['entries'] for q in status['queues'].values())} "
          f"requests, oldest {status.get('oldest_age_seconds', 0.0):g}s, dead letters: {status['dead_letters']}")
    for name, queue in status.get("unowned_queues", {}).items():
        print(f"  warning: queue {name} in {queue['directory']} holds {queue['items']} items that no exporter "
              f"of the config sends: {queue['fix']}")
    if running:
        eta, drain = status["eta_seconds"], status.get("drain", "")
        print(f"  drain rate: {status['drain_items_per_second']} items/s, time to empty: "
              f"{f'{eta:g}s' if eta is not None else drain or 'unknown'}")


def print_stats(result: dict[str, Any]) -> None:
    for store in result["stores"]:
        budget = f"{store['max_size_bytes']} bytes ({store['full_policy']})" if store["max_size_bytes"] else "none"
        print(f"{store['directory']}: file {store['file_bytes']} bytes, pages in use {store['pages_in_use_bytes']} "
              f"bytes, budget {budget}, dead letters {store['dead_letters']}")
        for name, queue in store["queues"].items():
            print(f"  {name:<32} entries={queue['entries']:<8} items={queue['items']:<10} bytes={queue['bytes']:<12} "
                  f"oldest={queue['oldest_age_seconds']}s")


def peek_line(row: dict[str, Any]) -> str:
    line = f"{row['queue']:<32} seq={row['seq']:<8} "
    if "items" not in row:  # the record does not decode
        return line + f"does not decode: {row['error']}"
    line += f"items={row['items']:<6} bytes={row['bytes']:<8} attempts={row['attempts']:<3} age={row['age_seconds']}s"
    return line + (f" {row['error']}" if "error" in row else "")


def dead_letter_line(row: dict[str, Any]) -> str:
    return (f"seq={row['seq']:<6} {row.get('queue', ''):<32} items={row['items']!s:<6} status={row.get('status')} "
            f"{row.get('reason', '')}")


class Rows:
    """Rows printed as they come: a line of text each, or one JSON array just as json.dumps(rows,
    indent=2) prints it."""

    def __init__(self, as_json: bool, line: Callable[[dict[str, Any]], str]):
        self.as_json = as_json
        self.line = line
        self.count = 0

    def __call__(self, row: dict[str, Any]) -> None:
        if self.as_json:
            print("[\n" if not self.count else ",\n", textwrap.indent(json.dumps(row, indent=2, default=str), "  "),
                  sep="", end="")
        else:
            print(self.line(row))
        self.count += 1

    def close(self) -> None:
        if self.as_json:
            print("\n]" if self.count else "[]")
