"""Importing aiohttp without the TLS contexts it builds for itself.

When imported, `aiohttp.connector` builds two client contexts (verifying and not), and loads the
system CA bundle into both: a sixth of the agent's start-up time and 1.6 MiB of its resident
memory, for contexts the agent never uses. The OTLP/HTTP exporter hands every HTTPS request a
context of its own (`exporters/otlphttp.py`), and the control client speaks over a Unix socket.

`import_aiohttp()` imports it with the loading of default verify paths skipped, so aiohttp's own
contexts hold no roots: were one ever used to verify a server, it would refuse, never trust. The
process entry point calls it before anything imports aiohttp; later, or a second time, it does nothing.
"""

from __future__ import annotations

import ssl
import sys


def _skip(context: ssl.SSLContext) -> None:
    """Stands in for `SSLContext.set_default_verify_paths` while aiohttp is imported."""


def import_aiohttp() -> None:
    if "aiohttp" in sys.modules:
        return
    own = "set_default_verify_paths" in vars(ssl.SSLContext)
    original = ssl.SSLContext.set_default_verify_paths
    setattr(ssl.SSLContext, "set_default_verify_paths", _skip)  # noqa: B010 (a method is replaced)
    try:
        import aiohttp.connector  # noqa: F401
    finally:
        if own:
            setattr(ssl.SSLContext, "set_default_verify_paths", original)  # noqa: B010
        else:
            delattr(ssl.SSLContext, "set_default_verify_paths")
