"""Command line: run | validate | version. The only place that exits the process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from importlib import resources

from edgeagent import __version__
from edgeagent.config.loader import AgentConfig, ConfigError, load_file, load_text
from edgeagent.runtime import logging as agent_logging
from edgeagent.runtime.paths import default_state_dir

log = logging.getLogger("edgeagent")
EXIT_CONFIG = 2


def default_config_text() -> str:
    return resources.files("edgeagent.config").joinpath("default.yaml").read_text(encoding="utf-8")


def load(config_path: str | None, upstream: str | None = None, overrides: list[str] | None = None) -> AgentConfig:
    if config_path:
        return load_file(config_path, overrides=overrides)
    environ = dict(os.environ)
    if upstream:
        environ["EDGEAGENT_UPSTREAM"] = upstream
    return load_text(default_config_text(), environ, source="<embedded default>", overrides=overrides)


def _print_errors(error: ConfigError) -> None:
    for path, message in error.errors:
        print(f"error: {path}: {message}" if path else f"error: {message}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load(args.config, overrides=args.set)
    except ConfigError as error:
        _print_errors(error)
        print(f"{len(error.errors)} error(s) in {args.config or 'the embedded default'}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config or 'the embedded default'} is valid: {len(config.pipelines)} pipeline(s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load(args.config, args.upstream or os.environ.get("EDGEAGENT_UPSTREAM"), args.set)
    except ConfigError as error:
        _print_errors(error)
        return EXIT_CONFIG
    telemetry_logs = config.service.telemetry.logs
    agent_logging.configure(telemetry_logs.level, telemetry_logs.encoding)
    for warning in config.warnings:
        log.warning(warning)
    from edgeagent.pipeline import Agent  # heavy imports only for run

    agent = Agent(config, args.state_dir or default_state_dir())
    try:
        return asyncio.run(_run(agent))
    except Exception as exc:  # start-up failures: a port in use, a locked queue, an unwritable directory
        log.error("edgeagent could not start: %s", exc, exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
        return 1


async def _run(agent) -> int:
    from edgeagent.runtime.systemd import Notifier

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    try:
        agent.build()
        await agent.start()
        notifier.ready(status="receivers up, queue open")
        await stop.wait()
        log.info("stopping: finishing pending commits and returning leases")
    finally:
        await notifier.stopping()
        await agent.shutdown()
    log.info("edgeagent stopped")
    return 0


_READ_ONLY = {"status", "stats", "peek", "export", "dead-letter-list", "dead-letter-export"}


def _control_call(args: argparse.Namespace, name: str, params: dict | None = None):
    """Run a control command on the running agent, or on the queue files when no agent runs.

    When the queue is locked by an agent that this state directory does not lead to, the command
    goes to the control socket that agent wrote in its lock file; failing that it is refused,
    naming the agent's PID and the fix. Read-only commands beside a stopped agent never write."""
    from edgeagent.queue.environment import StorageAccessError, StorageDamagedError, StorageLockedError
    from edgeagent.runtime import control

    config = load(args.config, overrides=args.set)
    state_dir = args.state_dir or default_state_dir()
    socket = control.socket_path(state_dir)
    try:
        return asyncio.run(control.call(socket, name, params)), True
    except ConnectionError:
        pass
    try:
        return asyncio.run(_offline(config, state_dir, name, params or {})), False
    except StorageLockedError as exc:
        other = exc.holder.get("control")
        if other and other != socket:
            try:
                return asyncio.run(control.call(other, name, params)), True
            except (ConnectionError, PermissionError):
                pass
        raise SystemExit(f"edgeagent: {exc}") from None
    except (StorageAccessError, StorageDamagedError) as exc:
        raise SystemExit(f"edgeagent: {exc}") from None


async def _offline(config: AgentConfig, state_dir: str, name: str, params: dict):
    from edgeagent.pipeline import Agent

    agent = Agent(config, state_dir)
    agent.read_only = name in _READ_ONLY
    try:
        agent.build()
        for store in agent.stores.values():
            store.start()
        if name == "status":
            return {"running": False, **agent.status()}
        return await agent.control_handlers()[name](params)
    finally:
        for store in agent.stores.values():
            await store.close()


def _emit(result, as_json: bool, text) -> None:
    if isinstance(result, (bytes, bytearray)):
        sys.stdout.buffer.write(result)
    elif as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        text(result)


def cmd_status(args: argparse.Namespace) -> int:
    result, running = _control_call(args, "status")

    def text(status: dict) -> None:
        print(f"edgeagent {'is running' if running else 'is not running'}")
        for exporter, state in status["exporters"].items():
            print(f"  exporter {exporter}: upstream {state['upstream']}" +
                  (f" ({state['endpoint']})" if state.get("endpoint") else ""))
        for connector, state in status.get("connectors", {}).items():
            print(f"  connector {connector}: level {state['active_level']} ({', '.join(state['active_pipelines'])})")
        print(f"  backlog: {status['backlog_items']} items in {sum(q['entries'] for q in status['queues'].values())} "
              f"requests, dead letters: {status['dead_letters']}")
        if running:
            eta = status["eta_seconds"]
            print(f"  drain rate: {status['drain_items_per_second']} items/s, time to empty: "
                  f"{'unknown (not draining)' if eta is None else f'{eta:g}s'}")
    _emit(result, args.json, text)
    return 0 if running else 3


def cmd_queue(args: argparse.Namespace) -> int:
    action = args.queue_action
    if action == "stats":
        result, _ = _control_call(args, "stats")
        _emit(result, args.json, _print_stats)
    elif action == "peek":
        result, _ = _control_call(args, "peek", {"n": args.n})
        _emit(result, args.json, lambda rows: [print(
            f"{r['queue']:<32} seq={r['seq']:<8} items={r['items']:<6} bytes={r['bytes']:<8} "
            f"attempts={r['attempts']:<3} age={r['age_seconds']}s") for r in rows])
    elif action == "export":
        result, _ = _control_call(args, "export", {"format": args.format})
        _write_output(args.output, result)
    elif action == "purge":
        if not args.yes:
            print("error: purge deletes queued data; add --yes to confirm", file=sys.stderr)
            return 2
        result, _ = _control_call(args, "purge", {"queue": args.queue})
        _emit(result, True, print)
    elif action == "compact":
        result, _ = _control_call(args, "compact")
        _emit(result, True, print)
    else:
        return cmd_dead_letter(args)
    return 0


def cmd_dead_letter(args: argparse.Namespace) -> int:
    action = args.dead_letter_action
    if action == "list":
        result, _ = _control_call(args, "dead-letter-list")
        _emit(result, args.json, lambda rows: [print(
            f"seq={r['seq']:<6} {r['queue']:<32} items={r['items']:<6} status={r.get('status')} {r.get('reason', '')}")
            for r in rows])
    elif action == "export":
        result, _ = _control_call(args, "dead-letter-export")
        _write_output(args.output, result)
    elif action == "replay":
        result, _ = _control_call(args, "dead-letter-replay", {"seqs": args.seq or None})
        _emit(result, True, print)
    else:
        if not args.yes:
            print("error: purge deletes dead letters; add --yes to confirm", file=sys.stderr)
            return 2
        result, _ = _control_call(args, "dead-letter-purge", {"seqs": args.seq or None})
        _emit(result, True, print)
    return 0


def _print_stats(result: dict) -> None:
    for store in result["stores"]:
        budget = f"{store['max_size_bytes']} bytes ({store['full_policy']})" if store["max_size_bytes"] else "none"
        print(f"{store['directory']}: file {store['file_bytes']} bytes, pages in use {store['pages_in_use_bytes']} "
              f"bytes, budget {budget}, dead letters {store['dead_letters']}")
        for name, queue in store["queues"].items():
            print(f"  {name:<32} entries={queue['entries']:<8} items={queue['items']:<10} bytes={queue['bytes']:<12} "
                  f"oldest={queue['oldest_age_seconds']}s")


def _write_output(path: str | None, data: bytes) -> None:
    if path:
        with open(path, "wb") as handle:
            handle.write(data)
    else:
        sys.stdout.buffer.write(data)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"edgeagent {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeagent", description="OpenTelemetry edge buffering agent")
    parser.add_argument("--config", help="otelcol-style YAML config (default: the embedded default)")
    parser.add_argument("--upstream", help="OTLP/HTTP upstream for the embedded default (or EDGEAGENT_UPSTREAM)")
    parser.add_argument("--state-dir", help="where queues live when no file_storage directory is configured")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, as otelcol: --set exporters::otlphttp::timeout=10s")
    parser.set_defaults(handler=cmd_run)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", dest="config", default=argparse.SUPPRESS)
    run.add_argument("--upstream", dest="upstream", default=argparse.SUPPRESS)
    run.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS)
    run.add_argument("--set", dest="set", action="append", default=argparse.SUPPRESS)
    run.set_defaults(handler=cmd_run)
    validate = sub.add_parser("validate", help="check a config and print every error")
    validate.add_argument("--config", dest="config", default=argparse.SUPPRESS)
    validate.add_argument("--set", dest="set", action="append", default=argparse.SUPPRESS)
    validate.set_defaults(handler=cmd_validate)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler=cmd_version)

    def target(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--config", dest="config", default=argparse.SUPPRESS)
        command.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS)
        command.add_argument("--set", dest="set", action="append", default=argparse.SUPPRESS)
        command.add_argument("--json", action="store_true", help="print JSON")
        return command

    status = target(sub.add_parser("status", help="backlog, drain rate, time to empty and upstream state"))
    status.set_defaults(handler=cmd_status)
    queue = sub.add_parser("queue", help="inspect and manage the persistent queue (works while the agent runs)")
    queue.set_defaults(handler=cmd_queue)
    queue_sub = queue.add_subparsers(dest="queue_action", required=True)
    target(queue_sub.add_parser("stats", help="entries, items, bytes and oldest age per queue"))
    target(queue_sub.add_parser("peek", help="the first N records of each queue")).add_argument(
        "n", type=int, nargs="?", default=10)
    export = target(queue_sub.add_parser("export", help="write every queued request"))
    export.add_argument("--format", choices=("otlp-json", "otlp-proto"), default="otlp-json",
                        help="otlp-json: one OTLP/JSON request per line; otlp-proto: each request after its "
                             "4-byte big-endian length")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    purge = target(queue_sub.add_parser("purge", help="delete queued data (counted as dropped)"))
    purge.add_argument("--queue", help="only this queue (exporter/signal)")
    purge.add_argument("--yes", action="store_true", help="confirm")
    target(queue_sub.add_parser("compact", help="compact the queue files now"))
    dead = queue_sub.add_parser("dead-letter", help="batches the upstream rejected permanently")
    dead_sub = dead.add_subparsers(dest="dead_letter_action", required=True)
    target(dead_sub.add_parser("list", help="list dead letters with the upstream's answer"))
    dead_export = target(dead_sub.add_parser("export", help="write dead letters as OTLP/JSON lines"))
    dead_export.add_argument("--output", "-o")
    replay = target(dead_sub.add_parser("replay", help="queue dead letters again (all, or the given seqs)"))
    replay.add_argument("seq", type=int, nargs="*")
    dead_purge = target(dead_sub.add_parser("purge", help="delete dead letters (all, or the given seqs)"))
    dead_purge.add_argument("seq", type=int, nargs="*")
    dead_purge.add_argument("--yes", action="store_true", help="confirm")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
