"""TLS for receivers and exporters, with otelcol's `tls` keys (config/configtls).

Clients (exporters): `client_ssl_context(cfg)` for aiohttp, and with `alpn=["h2"]` for the gRPC
client. Servers (receivers): `server_ssl_context(cfg)` for aiohttp, and with `alpn=["h2"]` for
the gRPC server. Each reads the files when it is called; an error names the file.

Certificate files are read again when they change, without a restart:

- servers check them whenever a connection starts, at most once per `reload_interval`: the
  context through its SNI callback (OpenSSL calls it on every handshake, with or without SNI).
  The client CA is read again only with `client_ca_file_reload: true`, as in otelcol.
- clients read them when they build a context; `reloading_client_context(cfg)` gives the
  current context, built again when a file changed: the otlphttp exporter asks for each
  request, the gRPC exporter opens new connections with a new context.

Differences the validation states: otelcol accepts `ca_file` on a server and ignores it (a
warning here; `client_ca_file` is what verifies clients); `check_grpc_client` refuses TLS
settings beside `insecure: true`, which would have no effect; `check_grpc_server` keeps the
gRPC receiver at TLS 1.2 or 1.3.
"""

from __future__ import annotations

import ssl
from typing import Any

from pydantic import model_validator

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration
from edgeagent.runtime.reload import Reloading

_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
             "1.3": ssl.TLSVersion.TLSv1_3}


class _TlsCommon(ComponentConfig):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    min_version: str = "1.2"
    max_version: str = ""
    reload_interval: Duration = 0.0

    def _check_common(self) -> None:
        for name in ("min_version", "max_version"):
            version = getattr(self, name)
            if version and version not in _VERSIONS:
                raise ValueError(f"{name} {version!r} is not a TLS version; use one of {', '.join(_VERSIONS)}")
        if self.min_version and self.max_version and _VERSIONS[self.min_version] > _VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise ValueError(f"{missing} is missing: cert_file and key_file go together (a certificate and its "
                             f"private key); set both or neither")


class TlsClientConfig(_TlsCommon):
    """An exporter's `tls`: verify the server (ca_file, else the system roots); cert_file/key_file for mTLS."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    server_name_override: str = ""

    @model_validator(mode="after")
    def _check(self) -> TlsClientConfig:
        self._check_common()
        return self


class TlsServerConfig(_TlsCommon):
    """A receiver's `tls`: cert_file and key_file are required; client_ca_file makes client certificates required."""

    client_ca_file: str | None = None
    client_ca_file_reload: bool = False

    @model_validator(mode="after")
    def _check(self) -> TlsServerConfig:
        self._check_common()
        if not self.cert_file:
            raise ValueError("cert_file and key_file are required: a TLS server needs a certificate and its key")
        if self.client_ca_file_reload and not self.client_ca_file:
            raise ValueError("client_ca_file_reload needs client_ca_file")
        return self

    def key_pair(self) -> tuple[str, str]:
        """(cert_file, key_file): a validated server config has both."""
        assert self.cert_file and self.key_file, "validation requires cert_file and key_file"
        return self.cert_file, self.key_file

    def config_warnings(self) -> list[str]:
        if self.ca_file:
            return ["ca_file has no effect on a receiver (as in otelcol); set client_ca_file to require and "
                    "verify client certificates"]
        return []


def _versions(context: ssl.SSLContext, cfg: _TlsCommon) -> None:
    context.minimum_version = _VERSIONS[cfg.min_version or "1.2"]
    if cfg.max_version:
        context.maximum_version = _VERSIONS[cfg.max_version]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from exc


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the certificate {cert_file} with the key {key_file}: {exc}") from exc


def _load_cas(context: ssl.SSLContext, path: str, pem: bytes | None = None) -> None:
    try:
        context.load_verify_locations(cadata=(pem if pem is not None else _read(path)).decode("ascii", "replace"))
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load CA certificates from {path}: {exc}") from exc


# ---- aiohttp -----------------------------------------------------------------------------------

def client_ssl_context(cfg: TlsClientConfig, alpn: list[str] | None = None) -> ssl.SSLContext | None:
    """The context for a client (aiohttp; gRPC with `alpn=["h2"]`), read from the files now; None
    with `insecure: true` (plaintext).

    `server_name_override` is not part of a context: pass it as the connection's `server_hostname`."""
    if cfg.insecure:
        return None
    if cfg.ca_file:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        _load_cas(context, cfg.ca_file)
    else:
        context = ssl.create_default_context()  # the system roots
    _versions(context, cfg)
    if cfg.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        _load_chain(context, cfg.cert_file, cfg.key_file)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def client_files(cfg: TlsClientConfig) -> list[str | None]:
    return [cfg.ca_file, cfg.cert_file, cfg.key_file]


def reloading_client_context(cfg: TlsClientConfig, alpn: list[str] | None = None) -> Reloading[ssl.SSLContext | None]:
    """`get()` gives the current client context, built again when a certificate file changed."""
    return Reloading(client_files(cfg), lambda: client_ssl_context(cfg, alpn), cfg.reload_interval)


def server_ssl_context(cfg: TlsServerConfig, alpn: list[str] | None = None) -> ssl.SSLContext:
    """The context for a server (aiohttp; gRPC with `alpn=["h2"]`); it swaps in new certificates
    when the files change."""
    fixed_client_ca = None
    if cfg.client_ca_file and not cfg.client_ca_file_reload:
        fixed_client_ca = _read(cfg.client_ca_file)

    def build() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _versions(context, cfg)
        _load_chain(context, *cfg.key_pair())
        if alpn:
            context.set_alpn_protocols(alpn)
        if cfg.client_ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
            _load_cas(context, cfg.client_ca_file, fixed_client_ca)
        return context

    reloading = Reloading(server_files(cfg), build, cfg.reload_interval)
    first = reloading.value

    def on_client_hello(connection: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        current = reloading.get()
        if current is not context:
            connection.context = current

    first.sni_callback = on_client_hello
    return first


def server_files(cfg: TlsServerConfig) -> list[str | None]:
    return [cfg.cert_file, cfg.key_file, cfg.client_ca_file if cfg.client_ca_file_reload else None]


# ---- gRPC --------------------------------------------------------------------------------------

def check_grpc_client(cfg: TlsClientConfig | None) -> TlsClientConfig | None:
    """Validation for a gRPC exporter's `tls` (use as a field validator): settings beside
    `insecure: true` would have no effect."""
    if cfg is not None and cfg.insecure:
        ignored = [name for name in ("ca_file", "cert_file", "key_file", "insecure_skip_verify", "server_name_override")
                   if getattr(cfg, name)]
        if ignored:
            raise ValueError(f"insecure: true turns TLS off, so {', '.join(ignored)} would have no effect; "
                             f"remove {'them' if len(ignored) > 1 else 'it'} or set insecure: false")
    return cfg


def check_grpc_server(cfg: TlsServerConfig | None) -> TlsServerConfig | None:
    """Validation for a gRPC receiver's `tls` (use as a field validator)."""
    if cfg is not None:
        _check_grpc_versions(cfg)
    return cfg


def _check_grpc_versions(cfg: _TlsCommon) -> None:
    if cfg.min_version not in ("", "1.2") or cfg.max_version not in ("", "1.3"):
        raise ValueError("gRPC needs TLS 1.2 or 1.3: leave min_version at 1.2 and max_version unset (or 1.3)")
