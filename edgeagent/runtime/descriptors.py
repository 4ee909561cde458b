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
"""

from __future__ import annotations

import codecs
import logging
import resource

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
