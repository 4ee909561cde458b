"""A lean start: aiohttp without the TLS contexts it builds for itself, and fewer collector passes.

When imported, `aiohttp.connector` builds two client contexts (verifying and not), and loads the
system CA bundle into both: about a tenth of the agent's start-up time and 1.6 MiB of its resident
memory, for contexts the agent never uses. The OTLP/HTTP exporter hands every HTTPS request a
context of its own (`exporters/otlphttp.py`), and the control client speaks over a Unix socket.

`import_aiohttp()` imports it with the loading of default verify paths skipped, so aiohttp's own
contexts hold no roots: were one ever used to verify a server, it would refuse, never trust. It
also keeps aiohttp's file-serving table (`web_fileresponse`, built from Python's defaults) from
reading the system's mime.types into `mimetypes`' global database first (0.4 MiB, 2 ms): the
module's functions still read it on their first call. The process entry point calls it before
anything imports aiohttp; later, or a second time, it does nothing.

Start-up allocates hundreds of thousands of objects (modules, classes, schemas) and frees few:
with CPython's default threshold, the collector passes over the young ones every 700 allocations,
about 5 % of the start-up time, for almost no garbage. `start_up_gc()` makes those passes rarer
until `steady_gc()`, once the agent is up; the collector never stops, so no garbage piles up.
"""

from __future__ import annotations

import gc
import mimetypes
import ssl
import sys

_START_UP_THRESHOLD = 5000  # young objects between passes (CPython's default: 700)
_steady: tuple[int, int, int] | None = None


def start_up_gc() -> None:
    global _steady
    if _steady is None:
        _steady = gc.get_threshold()
        gc.set_threshold(_START_UP_THRESHOLD, *_steady[1:])


def steady_gc() -> None:
    global _steady
    if _steady is not None:
        gc.set_threshold(*_steady)
        _steady = None


def _skip(context: ssl.SSLContext) -> None:
    """Stands in for `SSLContext.set_default_verify_paths` while aiohttp is imported."""


def import_aiohttp() -> None:
    if "aiohttp" in sys.modules:
        return
    own = "set_default_verify_paths" in vars(ssl.SSLContext)
    original = ssl.SSLContext.set_default_verify_paths
    setattr(ssl.SSLContext, "set_default_verify_paths", _skip)  # noqa: B010 (a method is replaced)
    types_read = mimetypes.inited
    mimetypes.inited = True  # MimeTypes() skips init(); guess_type() and the others call it when unread
    try:
        import aiohttp.connector
        import aiohttp.web_fileresponse  # noqa: F401
    finally:
        mimetypes.inited = types_read
        if own:
            setattr(ssl.SSLContext, "set_default_verify_paths", original)  # noqa: B010
        else:
            delattr(ssl.SSLContext, "set_default_verify_paths")
