"""Command line, as otelcol's: run | validate | components | featuregate | print-config | version | help,
plus the queue verbs.

The only place that exits the process. Every verb that reads a config takes the same
`--config` (repeatable; file:, env:, yaml:, http(s): URIs or paths, merged in order), `--set` and
`--upstream`, so `validate` checks exactly what `run` would start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, NoReturn

import yaml

from edgeagent import __version__, cli_text, lean
from edgeagent.cli_commands import Commands, config_flags, go_bool, queue_commands, target_flags
from edgeagent.cli_listings import MERGE_APPEND, cmd_components, cmd_featuregate
from edgeagent.config.document import ConfigError
from edgeagent.config.upstream import upstream_base
from edgeagent.runtime import descriptors, event_loop, hangup, loop_errors, suspensions
from edgeagent.runtime import logging as agent_logging
from edgeagent.runtime.paths import NoStateDirectory, default_state_dir

if TYPE_CHECKING:  # imported when the agent runs: the config commands stay light
    from edgeagent.config.loader import AgentConfig
    from edgeagent.runtime.systemd import Notifier
    from edgeagent.service.service import Service

log = logging.getLogger("edgeagent")
# otelcol exits 1 for every error, a bad config, flag or verb alike: its main ends in os.Exit(1)
# whenever the command fails
EXIT_ERROR = 1
EMBEDDED = "<embedded default>"
DRAIN_TIMEOUT_ENV = "EDGEAGENT_DRAIN_TIMEOUT"


def default_config_text() -> str:
    # read beside this module (edgeagent is always installed as files): importlib.resources' imports
    # (tempfile, shutil, zipfile ...) would cost every start 4 ms and half a MiB
    with open(os.path.join(os.path.dirname(__file__), "config", "default.yaml"), encoding="utf-8") as text:
        return text.read()


def _environ(upstream: str | None) -> tuple[dict[str, str], str | None]:
    """The environment configs are expanded with (--upstream sets EDGEAGENT_UPSTREAM, read as a base
    URL), and a warning when the upstream given was a signal URL."""
    environ = dict(os.environ)
    if upstream:
        environ["EDGEAGENT_UPSTREAM"] = upstream
    if not environ.get("EDGEAGENT_UPSTREAM"):
        return environ, None
    try:
        environ["EDGEAGENT_UPSTREAM"], warning = upstream_base(environ["EDGEAGENT_UPSTREAM"])
    except ValueError as exc:
        raise ConfigError([("", str(exc))]) from None
    return environ, warning


def load(
    config: list[str] | str | None, upstream: str | None = None, overrides: list[str] | None = None,
    gates: frozenset[str] = frozenset(),
) -> AgentConfig:
    """The config every verb runs with: the --config sources merged (or the embedded default), then --set."""
    # imported here: the config models and their decoding cost a command that asks the running agent
    # (status, reload, the queue verbs) a third of its start
    with lean.importing():
        from edgeagent.config.loader import load_text, load_uris

    uris = [config] if isinstance(config, str) else list(config or [])
    environ, warning = _environ(upstream)
    append = MERGE_APPEND in gates
    try:
        if uris:
            loaded = load_uris(uris, environ, overrides, append)
        else:
            loaded = load_text(default_config_text(), environ, source=EMBEDDED, overrides=overrides,
                               merge_append=append)
        if warning:
            loaded.warnings.append(warning)
        return loaded
    except ConfigError:
        raise
    except Exception as exc:  # a bug must still read as a message, never as a traceback
        raise ConfigError([("", f"the config could not be checked ({type(exc).__name__}: {exc}); please report "
                                f"this with the config")]) from exc


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _print_errors(error: ConfigError) -> None:
    _print_warnings(error.warnings)  # first: an unset variable they name is often what the errors come from
    for path, message in error.errors:
        print(f"error: {path}: {message}" if path else f"error: {message}", file=sys.stderr)


def _described(args: argparse.Namespace) -> str:
    return ", ".join(args.config) if args.config else "the embedded default"


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load(args.config, _upstream(args), args.set, _gates(args))
    except ConfigError as error:
        _print_errors(error)
        print(f"{len(error.errors)} error(s) in {_described(args)}", file=sys.stderr)
        return EXIT_ERROR
    _print_warnings(config.warnings)
    print(f"{_described(args)} is valid: {len(config.pipelines)} pipeline(s)")
    return 0


def _gates(args: argparse.Namespace) -> frozenset[str]:
    """The feature gates --feature-gates turned on, in order: `id` or `+id` on, `-id` off."""
    enabled: set[str] = set()
    for gate in (gate for flag in getattr(args, "feature_gates", []) for gate in flag):
        (enabled.discard if gate.startswith("-") else enabled.add)(gate.lstrip("+-"))
    return frozenset(enabled)


def _upstream(args: argparse.Namespace) -> str | None:
    return getattr(args, "upstream", None) or os.environ.get("EDGEAGENT_UPSTREAM")


def cmd_print_config(args: argparse.Namespace) -> int:
    """The effective config, as otelcol's: every component's settings with their defaults, keys in
    order, secrets redacted unless --mode unredacted. A config that does not validate, with
    --validate false, is printed as merged, environment expanded."""
    from edgeagent.config.effective import effective_document
    from edgeagent.config.redact import redact

    try:
        config = load(args.config, _upstream(args), args.set, _gates(args))
        document, warnings, in_order = effective_document(config), config.warnings, True
    except ConfigError as error:
        if args.validate:
            _print_errors(error)
            return EXIT_ERROR
        merged = _merged_document(args)
        if merged is None:
            return EXIT_ERROR
        (document, warnings), in_order = merged, False
    _print_warnings(warnings)
    if args.mode == "redacted":
        document = redact(document)
    if args.format == "json":
        print(json.dumps(document, indent=2, default=str, sort_keys=in_order))
    else:
        print(yaml.safe_dump(document, sort_keys=in_order, default_flow_style=False, allow_unicode=True), end="")
    return 0


def _merged_document(args: argparse.Namespace) -> tuple[dict, list[str]] | None:
    from edgeagent.config.loader import raw_document

    environ, _ = _environ(_upstream(args))
    sources = args.config or ["yaml:" + default_config_text()]
    try:
        return raw_document(sources, environ, args.set, MERGE_APPEND in _gates(args))
    except ConfigError as error:
        _print_errors(error)
        return None


def _drain_timeout(args: argparse.Namespace) -> float:
    """--drain-timeout, else $EDGEAGENT_DRAIN_TIMEOUT, in seconds (read by `run` alone)."""
    if args.drain_timeout is not None:
        return float(args.drain_timeout)
    text = os.environ.get(DRAIN_TIMEOUT_ENV) or "0"
    try:
        return float(text)
    except ValueError:
        raise ConfigError([(DRAIN_TIMEOUT_ENV, f"{text!r} is not a number of seconds (such as 40)")]) from None


def cmd_run(args: argparse.Namespace) -> int:
    try:
        drain_timeout = _drain_timeout(args)
        config = load(args.config, _upstream(args), args.set, _gates(args))
    except ConfigError as error:
        _print_errors(error)
        return EXIT_ERROR
    telemetry_logs = config.service.telemetry.logs
    try:
        agent_logging.configure(telemetry_logs.level, telemetry_logs.encoding, telemetry_logs.output_paths,
                                telemetry_logs.initial_fields)
    except OSError as exc:  # a log file that cannot be opened
        print(f"error: service::telemetry::logs::output_paths: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for warning in config.warnings:
        log.warning(warning)
    descriptors.raise_soft_limit()  # as the Go runtime raises it for otelcol
    descriptors.load_codecs()  # while descriptors are free: a failed first lookup would stand for good
    with lean.importing():
        from edgeagent.service.service import Service  # heavy imports only for run

    agent = Service(config, args.state_dir or default_state_dir())
    upstream = _upstream(args)
    gates = _gates(args)
    agent.reloader = lambda: load(args.config, upstream, args.set, gates)  # SIGHUP reads the same sources again
    try:
        return event_loop.run(_run(agent, drain_timeout))
    except Exception as exc:  # start-up failures: a port in use, a locked queue, an unwritable directory
        log.error("edgeagent could not start: %s%s", exc, _sandbox_hint(exc),
                  exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
        return 1


def _sandbox_hint(exc: Exception) -> str:
    """What to change when systemd's sandbox, not the directory's owner, refuses a write."""
    if not (isinstance(exc, OSError) and exc.errno == errno.EROFS and os.environ.get("INVOCATION_ID")):
        return ""
    return ("; under systemd the unit's ProtectSystem=strict lets the agent write only to its StateDirectory "
            "(/var/lib/edgeagent, /var/lib/otelcol): to keep the queue elsewhere, make that directory the service "
            "user's and allow it with `systemctl edit edgeagent`: [Service] ReadWritePaths=DIRECTORY")


async def _run(agent: Service, drain_timeout: float = 0.0) -> int:
    from edgeagent.runtime.systemd import Notifier

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop_errors.install(loop)
    suspensions.install(loop)

    def stopping() -> None:
        stop.set()
        agent.interrupt()  # a compaction of the queue at start-up takes seconds: it gives up

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    if hangup.stopped():  # a SIGTERM held during start-up (as a container's PID 1): nothing has started yet
        log.info("stopping: a SIGTERM came while the agent was starting")
        return 0
    notifier = Notifier()
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = loop.create_task(_reload(agent, notifier), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    hangup.say_ignored(lambda signum: loop.call_soon_threadsafe(_ignored, signum))
    agent.on_fatal = stop.set  # a worker stopped for good, or a reload could not restore the config
    try:
        agent.build()
        await agent.start()
        if agent.started:  # not when a stop came during start-up
            lean.serving_gc()
            lean.freeze_start_up()
            notifier.ready(status="receivers up, queue open")
            if hangup.take():  # a SIGHUP came during start-up: the config may have changed since it was read
                reload()
            await stop.wait()
            if drain_timeout > 0 and agent.fatal is None:
                notifier.draining(drain_timeout)  # longer than the unit's stop timeout: systemd would kill it
                await agent.drain(drain_timeout)
        log.info("stopping: finishing pending commits and returning leases")
    finally:
        hangup.say_ignored(None)
        await notifier.stopping()
        await agent.shutdown()
    if agent.fatal is not None:
        log.error("edgeagent stopped: %s", agent.fatal)
        return 1
    log.info("edgeagent stopped")
    return 0


def _ignored(signum: int) -> None:
    log.warning("%s ignored: edgeagent reads its config again on SIGHUP and stops on SIGTERM or SIGINT",
                signal.Signals(signum).name)


async def _reload(agent: Service, notifier: Notifier) -> None:
    """SIGHUP: apply the config sources as they are now; an invalid config leaves the running one as it is.
    Once a stop has begun the reload is refused, and systemd hears nothing of it: the agent is not ready again."""
    stopping = agent.stopping
    if not stopping:
        notifier.reloading()
    try:
        await agent.reload_from_source()
    except Exception as exc:  # a half-applied reload: health names the failure, the process keeps serving
        log.error("config reload failed: %s", exc, exc_info=exc)
        agent.component_failed("service::reload", str(exc))
    finally:
        if not stopping and not agent.stopping:
            notifier.ready(status="receivers up, queue open")


def cmd_reload(args: argparse.Namespace) -> int:
    from edgeagent.runtime import control

    state_dir = args.state_dir or default_state_dir()
    try:
        result = _ask(control.socket_path(state_dir), "reload", {}, args.timeout)
    except ConnectionError:
        print("edgeagent is not running (no control socket in the state directory)", file=sys.stderr)
        return 3
    except RuntimeError as exc:  # the agent answered with an error
        print(f"reload failed: {exc}", file=sys.stderr)
        return 1
    _emit(
        result, args.json, lambda r: print(f"reload {r['result']}" + "".join(f"\n  {e}" for e in r.get("errors", [])))
    )
    return 0 if result["result"] == "applied" else 1


_READ_ONLY = {"status", "stats", "peek", "export", "dead-letter-list", "dead-letter-export"}


def _control_call(args: argparse.Namespace, name: str, params: dict | None = None,
                  sink: Callable[[bytes], object] | None = None):
    """Run a control command on the running agent, or on the queue files when no agent runs.
    With `sink`, an export goes to it piece by piece (the answer is then None).

    When the queue is locked by an agent that this state directory does not lead to, the command
    goes to the control socket that agent wrote in its lock file; failing that it is refused,
    naming the agent's PID and the fix. Read-only commands beside a stopped agent never write."""
    from edgeagent.queue.environment import StorageAccessError, StorageDamagedError, StorageLockedError
    from edgeagent.runtime import control

    state_dir = args.state_dir or default_state_dir()
    socket = control.socket_path(state_dir)
    try:
        return _ask(socket, name, params, args.timeout, sink), True
    except control.AnswerBrokenOff as exc:  # the agent answered: its files are not ours to read
        raise SystemExit(f"edgeagent: {name} failed: {exc}") from None
    except ConnectionError:
        pass
    except RuntimeError as exc:  # the agent answered with an error
        raise SystemExit(f"edgeagent: {name} failed: {exc}") from None
    try:  # the config only tells where the queues are when no agent answers: a running agent knows
        config = load(args.config, overrides=args.set, gates=_gates(args))
    except ConfigError as error:
        _print_errors(error)
        raise SystemExit(EXIT_ERROR) from None
    try:
        return asyncio.run(_offline(config, state_dir, name, params or {}, sink)), False
    except StorageLockedError as exc:
        other = exc.holder.get("control")
        if other and other != socket:
            try:
                return _ask(other, name, params, args.timeout, sink), True
            except (ConnectionError, PermissionError):
                pass
            except RuntimeError as refused:
                raise SystemExit(f"edgeagent: {name} failed: {refused}") from None
        raise SystemExit(f"edgeagent: {exc}") from None
    except (StorageAccessError, StorageDamagedError) as exc:
        raise SystemExit(f"edgeagent: {exc}") from None
    except KeyError as exc:  # as the running agent answers it: a name that is not there
        raise SystemExit(f"edgeagent: {name} failed: {exc.args[0]}") from None


def _ask(socket: str, name: str, params: dict | None, timeout: float, sink: Callable[[bytes], object] | None = None):
    """The running agent's answer; an agent that accepts the command and does not answer in time
    ends the command (never the files beside it: that agent holds them)."""
    from edgeagent.runtime import control

    try:
        return asyncio.run(control.call(socket, name, params, timeout, sink))
    except TimeoutError as exc:
        raise SystemExit(f"edgeagent: {exc}. If it is busy (a large export or compaction), run the command "
                         f"again with a longer --timeout; if not, look at its log and restart it") from None


async def _offline(config: AgentConfig, state_dir: str, name: str, params: dict,
                   sink: Callable[[bytes], object] | None = None):
    from edgeagent.service.service import Service

    agent = Service(config, state_dir, read_only=name in _READ_ONLY)
    try:
        agent.build()
        for store in agent.stores.values():
            store.start()
        if name == "status":
            return agent.status(running=False)
        result = await agent.control_handlers()[name](params)
        if sink is None or not isinstance(result, AsyncIterator):
            return result
        async for piece in result:  # an export: written as it is read, while the stores are open
            sink(piece)
        return None
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
    result = {"running": running, **result}  # whoever answered: the agent, or its files

    _emit(result, args.json, lambda status: cli_text.print_status(status, running))
    return 0 if running else 3


def cmd_queue(args: argparse.Namespace) -> int:
    action = args.queue_action
    if action == "stats":
        result, _ = _control_call(args, "stats")
        _emit(result, args.json, cli_text.print_stats)
    elif action == "peek":
        result, _ = _control_call(args, "peek", {"n": args.n})
        _emit(result, args.json, lambda rows: [print(cli_text.peek_line(row)) for row in rows])
    elif action == "export":
        with _output(args.output) as out:
            _control_call(args, "export", {"format": args.format}, sink=out.write)
    elif action == "purge":
        if not args.yes:
            print("error: purge deletes queued data; add --yes to confirm", file=sys.stderr)
            return EXIT_ERROR
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
    if action == "list":  # streamed: a row is printed as it comes, the letters are never all held
        from edgeagent.runtime.control import Lines

        rows = cli_text.Rows(args.json, cli_text.dead_letter_line)
        result, _ = _control_call(args, "dead-letter-list", sink=Lines(rows))
        for row in result or ():  # an agent of an earlier version answers with every row at once
            rows(row)
        rows.close()
    elif action == "export":
        with _output(args.output) as out:
            _control_call(args, "dead-letter-export", sink=out.write)
    elif action == "replay":
        result, _ = _control_call(args, "dead-letter-replay", {"seqs": args.seq or None})
        _emit(result, True, print)
    else:
        if not args.yes:
            print("error: purge deletes dead letters; add --yes to confirm", file=sys.stderr)
            return EXIT_ERROR
        result, _ = _control_call(args, "dead-letter-purge", {"seqs": args.seq or None})
        _emit(result, True, print)
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    """Where an export goes, opened before the agent is asked: a file that cannot be written is an
    error before the whole queue is read, not a traceback after; an export that fails leaves no file."""
    if not path:
        yield sys.stdout.buffer
        return
    try:
        handle = open(path, "wb")
    except OSError as exc:
        raise SystemExit(f"edgeagent: cannot write {path}: {exc.strerror}") from None
    with handle:
        try:
            yield handle
        except BaseException:
            os.unlink(path)
            raise


def cmd_version(args: argparse.Namespace) -> int:
    print(f"edgeagent version {__version__}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with otelcol's exit code for an unknown flag or verb or a bad value: 1, not argparse's 2.
    (Its sub-commands are made of this class too.)"""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _joined_values(argv: list[str]) -> list[str]:
    """`--feature-gates -id` as `--feature-gates=-id`: otelcol's flags take the next word as the value,
    and a gate turned off starts with '-', which argparse would read as an option."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--feature-gates" and arg.startswith("-"):
            joined[-1] = f"--feature-gates={arg}"
        else:
            joined.append(arg)
    return joined


def _help(parser: argparse.ArgumentParser, topic: list[str]) -> int:
    """`help [COMMAND ...]`, as cobra's help command: the help of the command named."""
    for name in topic:
        commands = next((action.choices for action in parser._actions
                         if isinstance(action, argparse._SubParsersAction)), {})
        if name not in commands:
            print(f"edgeagent help: unknown command {name!r}; commands: {', '.join(commands) or 'none'}",
                  file=sys.stderr)
            return EXIT_ERROR
        parser = commands[name]
    parser.print_help()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The commands' parsers are made when first needed (cli_commands.py): `build` adds their arguments."""
    parser = _Parser(prog="edgeagent", description="OpenTelemetry edge buffering agent: OTLP in, "
                                     "a durable queue on disk, OTLP out whenever the upstream is reachable. "
                                     "Without a command it runs.")
    parser.add_argument("-v", "--version", action="version", version=f"edgeagent version {__version__}",
                        help="print the version and exit")
    config_flags(parser, top=True)
    parser.add_argument("--state-dir", help="where queues live when no file_storage directory is configured")
    parser.add_argument("--drain-timeout", type=float, metavar="SECONDS", default=None,
                        help="on SIGTERM, keep sending queued data for up to SECONDS before stopping (hubs "
                             "scaled down for good; or EDGEAGENT_DRAIN_TIMEOUT); what is left stays queued")
    parser.set_defaults(handler=cmd_run)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=Commands)

    def run(command: argparse.ArgumentParser) -> None:
        config_flags(command)
        command.add_argument("--state-dir", dest="state_dir", default=argparse.SUPPRESS,
                             help="where queues live when no file_storage directory is configured")
        command.add_argument("--drain-timeout", dest="drain_timeout", type=float, default=argparse.SUPPRESS,
                             metavar="SECONDS", help="on SIGTERM, keep sending queued data for up to SECONDS")
        command.set_defaults(handler=cmd_run)

    def validate(command: argparse.ArgumentParser) -> None:
        config_flags(command)
        command.set_defaults(handler=cmd_validate)

    def print_config(command: argparse.ArgumentParser) -> None:
        config_flags(command)
        command.add_argument("--mode", type=str.lower, choices=("redacted", "unredacted"), default="redacted",
                             help="redacted (default) masks secrets; unredacted shows them")
        command.add_argument("--format", type=str.lower, choices=("yaml", "json"), default="yaml",
                             help="output format")
        command.add_argument("--validate", type=go_bool, nargs="?", const=True, default=True, metavar="BOOL",
                             help="check the config first and print its errors instead (default: true; "
                                  "--validate=false turns it off)")
        command.set_defaults(handler=cmd_print_config)

    def featuregate(command: argparse.ArgumentParser) -> None:
        command.add_argument("gate", nargs="?", metavar="FEATURE_ID")
        command.set_defaults(handler=cmd_featuregate)

    def help_(command: argparse.ArgumentParser) -> None:
        command.add_argument("topic", nargs="*", metavar="COMMAND")
        command.set_defaults(handler=lambda args: _help(parser, args.topic))

    def queue(command: argparse.ArgumentParser) -> None:
        queue_commands(command)
        command.set_defaults(handler=cmd_queue)

    def handled_by(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.ArgumentParser], None]:
        return lambda command: command.set_defaults(handler=handler)

    sub.add_parser("run", build=run, help="run the agent (the default)", description="Run the agent until "
                   "SIGTERM or SIGINT; queued data is kept for the next run.")
    sub.add_parser("validate", build=validate, help="check a config and print every error",
                   description="Check the config run would start with (same --config, --set and --upstream) and "
                               "print every error with its YAML path. Exit code 0 when valid, 1 when not (as "
                               "otelcol). Opens no port and no queue: it reads only the sources the config names.")
    sub.add_parser("print-config", build=print_config, aliases=["print-initial-config"],
                   help="print the effective config with secrets redacted",
                   description="Print the config run would start with: every --config merged, --set applied, "
                               "the environment expanded, every component's defaults filled in; header values, "
                               "tokens, passwords and TLS keys are shown as [REDACTED] unless --mode unredacted.")
    sub.add_parser("components", build=handled_by(cmd_components), help="list every component type by kind",
                   description="List the receivers, processors, exporters, connectors and extensions this build "
                               "knows, with the signals each supports.")
    sub.add_parser("featuregate", build=featuregate, help="display feature gates information",
                   description="List the feature gates --feature-gates accepts, with their default state, or "
                               "describe the one named (as otelcol).")
    sub.add_parser("version", build=handled_by(cmd_version), help="print the version",
                   description="Print the version.")
    sub.add_parser("help", build=help_, help="help about any command", description="Print the help of a "
                   "command (help queue dead-letter), or of edgeagent.")
    sub.add_parser("status", build=lambda command: target_flags(command).set_defaults(handler=cmd_status),
                   help="backlog, drain rate, time to empty and upstream state",
                   description="The running agent's upstreams, backlog, drain rate and time to empty; beside a "
                               "stopped agent, the backlog read from its queue files. Exit code 0 while the agent "
                               "runs, 3 when it does not (as systemctl status), 1 on an error.")
    sub.add_parser("reload", build=lambda command: target_flags(command).set_defaults(handler=cmd_reload),
                   help="make the running agent read its config again (as SIGHUP)")
    sub.add_parser("queue", build=queue,
                   help="inspect and manage the persistent queue (works while the agent runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    lean.start_up_gc()  # until `run` is up (`python -m edgeagent` began it before the first import)
    hangup.hold()  # (the `edgeagent` command did before its first import; again for a caller of main)
    try:
        args = build_parser().parse_args(_joined_values(sys.argv[1:] if argv is None else argv))
        if args.handler is not cmd_run:
            hangup.release()
            lean.steady_gc()
        return args.handler(args)
    except NoStateDirectory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `edgeagent queue peek | head`: the reader left; nothing is wrong but the rest unread
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail too
        return 1
    finally:
        lean.steady_gc()
