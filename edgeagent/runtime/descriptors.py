"""The open-file limit, raised at start as Go raises it for every Go program (otelcol too).

Each client connection takes a descriptor. A shell, a container (containerd 2 no longer lifts
it) or a service manager without LimitNOFILE starts a process with a soft limit of 1,024 under
a far higher hard one: past about a thousand clients the receivers stopped accepting, where
otelcol serves on, its soft limit raised to the hard one by the Go runtime. `raise_soft_limit`
does the same; the agent starts no other programs, which Go gives the old limit back.

A process out of descriptors also fails the imports it makes on first use, and most such
failures pass with the shortage. One does not: Python remembers a codec whose module failed to
import as unknown, for good, and every name lookup encodes its host with the idna codec. A first
export made while idle connections held every descriptor (the import's files opened, then
unicodedata's shared library not) left every later send failing with "unknown encoding: idna"
until a restart. `load_codecs` looks the codec up at start, while descriptors are free.

A process may also start with descriptor 0, 1 or 2 closed (`cmd >&-`, an init system, a wrapper
that closed them). The first files it opens then take those numbers: the log file became
descriptor 2, the queue's could become 1, and every later write meant for stdout or stderr (a log
line, the debug exporter, a C library's message, Python's fatal error text) went into that file;
with stdout closed Python has no sys.stdout and the agent failed at start. The Go runtime opens
/dev/null on each of them before anything else, and `open_standard` does the same.
"""

from __future__ import annotations

import codecs
import errno
import io
import logging
import os
import resource
import sys

log = logging.getLogger(__name__)


def raise_soft_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:  # a sandbox may refuse it: the soft limit stands
        log.warning("the open-file limit could not be raised to the hard limit",
                    extra={"soft": soft, "hard": hard, "error": str(exc)})


def load_codecs() -> None:
    """Look up now the codecs a name lookup needs, which Python would never look up again had their
    first lookup failed."""
    codecs.lookup("idna")


def open_standard() -> None:
    """/dev/null on each of descriptors 0, 1 and 2 that is closed, and the sys stream Python left
    without one (None) made on it; first thing, before any file is opened."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
        opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: `fd`, as those below are open
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    if sys.stdin is None:
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    if sys.stderr is None:
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), errors="backslashreplace",
                                      write_through=True)
