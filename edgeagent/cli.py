"""Command line: run | validate | version. The only place that exits the process."""

from __future__ import annotations

import argparse
import asyncio
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
    return load_text(default_config_text(), environ, source="<embedded default>",
                     context={"allow_missing_endpoint": True}, overrides=overrides)


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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        agent.build()
        await agent.start()
        await stop.wait()
        log.info("stopping: finishing pending commits and returning leases")
    finally:
        await agent.shutdown()
    log.info("edgeagent stopped")
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
