"""`--upstream` / EDGEAGENT_UPSTREAM: the OTLP/HTTP base URL the embedded default config exports to.

Users often paste a signal URL (`http://collector:4318/v1/traces`), as an SDK's
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT takes it. The exporter appends `/v1/<signal>` to its
endpoint, so that URL would be answered 404 for every batch: it is read as its base URL, and
the user is told so.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SIGNAL_PATH = re.compile(r"/v1/(traces|metrics|logs)/?$")


def upstream_base(url: str) -> tuple[str, str | None]:
    """The base URL to export to, and a warning when the given one was a signal URL."""
    url = url.strip()
    if not url:
        return url, None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--upstream {url!r}: give an http:// or https:// URL such as http://collector:4318")
    match = _SIGNAL_PATH.search(parts.path)
    if match is None or parts.query:
        return url, None
    base = url[:len(url) - len(parts.path)] + parts.path[:match.start()]
    return base, (f"--upstream {url} names the {match.group(1)} path; exporting every signal to {base} "
                  f"(/v1/traces, /v1/metrics and /v1/logs are appended)")
