"""Keeping secrets out of what the agent logs, stores and shows.

An upstream's error answer may echo the request's headers (some proxies and gateways do),
and an endpoint may carry a password or a token in its URL. Whatever reaches a log line,
a dead letter, `/health` or `status` goes through `mask` or `shown_url` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter configured values ("1", "on") would garble the text and reveal little

# `name: value` or `name=value` where the name says the value is a credential
_SENSITIVE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie|[\w-]*api[-_]?key|[\w-]*token|[\w-]*secret|password|passwd)"
    r"(\s*[\"']?\s*[:=]\s*[\"']?)([^\r\n\"',;&}]+)")
_PASSWORD = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^/@:?#]*):[^/@?#]*@")  # [scheme://]user:password@
_QUERY_VALUE = re.compile(r"([?&][^=&#]*=)[^&#]*")


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret value and every credential-looking `name: value` masked."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _SENSITIVE.sub(lambda match: match.group(1) + match.group(2) + MASK, text)


def shown_url(url: str) -> str:
    """A URL as status, health and logs show it: its password and query values masked."""
    return _QUERY_VALUE.sub(rf"\g<1>{MASK}", _PASSWORD.sub(rf"\g<1>:{MASK}@", url))


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that are secrets: the password and the query values."""
    secrets = []
    match = _PASSWORD.match(url)
    if match:
        secrets.append(url[len(match.group(1)) + 1:match.end() - 1])
    secrets += [found.group(0)[len(found.group(1)):] for found in _QUERY_VALUE.finditer(url)]
    return [secret for secret in secrets if secret]
