"""Authentication by extensions, as otelcol's configauth: `auth: {authenticator: <extension id>}`.

A receiver protocol or an exporter names an extension; the loader checks that it is defined, is
an authenticator and is listed in service::extensions, so it has started before any receiver or
exporter. An authenticator extension offers two methods:

    authenticate(headers: Mapping[str, str]) -> bool   # server side: may this request in?
                                                       # (header names in any case; gRPC metadata too)
    client_headers() -> dict[str, str]                 # client side: headers to add to every request
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from edgeagent.component import ComponentConfig


class AuthConfig(ComponentConfig):
    authenticator: str


class AuthenticatorConfig(ComponentConfig):
    """Base of the configs of extensions that can be named as an `authenticator`."""


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> bool: ...

    def client_headers(self) -> dict[str, str]: ...


def resolve(host: Any, auth: AuthConfig | None) -> Authenticator | None:
    """The running extension that `auth` names (None without `auth`), from the host's extensions."""
    if auth is None:
        return None
    extension = getattr(host, "extensions", {}).get(auth.authenticator)
    if extension is None:
        raise LookupError(f"authenticator {auth.authenticator!r} is not a running extension; define it under "
                          f"extensions and list it in service::extensions")
    return extension


def auth_settings(model: BaseModel, path: str) -> Iterator[tuple[str, AuthConfig]]:
    """Every `auth` block inside a component config, with its YAML path (for the loader's cross-checks)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, AuthConfig):
            yield f"{path}::{name}", value
        elif isinstance(value, BaseModel):
            yield from auth_settings(value, f"{path}::{name}")
