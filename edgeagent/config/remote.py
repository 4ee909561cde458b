"""otelcol's http and https config providers: a config (`--config https://host/agent.yaml`) or a
value (`${https://host/token}`) is the body of one GET.

As otelcol's: redirects are followed, https trusts the system's CAs (SSL_CERT_FILE names others),
and any answer but 200 is an error. Unlike otelcol's client, which waits for ever, a source that
does not answer within TIMEOUT_S is an error too: SIGHUP reads the sources again in a running agent.
"""

from __future__ import annotations

SCHEMES = ("http", "https")
TIMEOUT_S = 30.0


class FetchError(Exception):
    """Why a URI gave no config: a sentence, without the URI (the caller names it)."""


def fetch(uri: str, limit: int) -> str:
    """The body of a 200 answer to GET `uri` as text; FetchError for anything else or over `limit` bytes."""
    import urllib.error  # only for a config that names a URL: 24 ms of imports every start would pay
    import urllib.request

    try:
        with urllib.request.urlopen(uri, timeout=TIMEOUT_S) as response:
            status = response.status
            body = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"the server answered {exc.code} {exc.reason}; a config source must answer 200") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot fetch it: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # a timeout or reset while reading, a URI urllib cannot use
        raise FetchError(f"cannot fetch it: {exc}") from None
    if status != 200:
        raise FetchError(f"the server answered {status}; a config source must answer 200")
    if len(body) > limit:
        raise FetchError(f"the answer is over {limit // 2**20} MiB; the limit is {limit // 2**20} MiB for a config")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FetchError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
