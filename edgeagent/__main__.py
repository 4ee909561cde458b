"""`python -m edgeagent` and the `edgeagent` command: UTF-8 mode, closed standard descriptors on /dev/null,
SIGHUP held and the collector eased before the CLI's imports (a fifth of a second)."""

from edgeagent.lean import importing, start_up_gc
from edgeagent.runtime import descriptors, hangup, utf8


def main() -> int:
    descriptors.open_standard()  # before any file is opened: runtime/descriptors.py
    utf8.utf8_mode()  # where the locale is not UTF-8, the process starts again: runtime/utf8.py
    hangup.hold()  # a SIGHUP during start-up must not end the agent: runtime/hangup.py
    start_up_gc()  # see lean.py
    with importing():
        from edgeagent.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
