"""TLS for receivers and exporters, with otelcol's `tls` keys (config/configtls).

Clients (exporters): `client_ssl_context(cfg)` for the HTTP/1.1 client, and with `alpn=["h2"]` for the gRPC
client. Servers (receivers): `server_ssl_context(cfg)` for the HTTP/1.1 server, and with
`alpn=["h2"]` for the gRPC server. Each reads the files when it is called; an error names the file.

Certificate files are read again when they change, without a restart:

- servers check them whenever a connection starts, at most once per `reload_interval`: the
  context through its SNI callback (OpenSSL calls it on every handshake, with or without SNI).
  The client CA is read again only with `client_ca_file_reload: true`, as in otelcol.
- clients read them when they build a context; `reloading_client_context(cfg)` gives the
  current context, built again when a file changed: the otlphttp exporter asks for each
  request, the gRPC exporter opens new connections with a new context.

Certificates and keys may also be given inline, as otelcol's `ca_pem`, `cert_pem` and `key_pem`
(a file or a PEM for each, not both); OpenSSL loads a certificate and key only from files, so one
given inline goes to a file in memory (memfd), read through /proc/self/fd: nothing is written to a
filesystem, and a read-only root with no writable /tmp, where a temporary file failed the start, is
no obstacle (elsewhere: a private temporary file, removed at once). `include_system_ca_certs_pool`
adds the system roots to `ca_file`/`ca_pem` on a client, to `client_ca_file` on a server.
`cipher_suites` takes Go's names (TLS 1.2 and below, as in Go: TLS 1.3 suites are not configurable
there, so their names are accepted and change nothing; a list of TLS 1.3 names only leaves TLS 1.3 only), with
`include_insecure_cipher_suites` for Go's insecure ones (RC4 and 3DES are refused: OpenSSL 3
offers neither). `curve_preferences` and `tpm` are refused with the reason (Python's ssl sets no
list of key-exchange groups; there is no TPM support).

Differences the validation states: otelcol accepts `ca_file` on a server and ignores it (a
warning here; `client_ca_file` is what verifies clients); `client_auth_type` (Go's names, as
Prometheus' web config spells them), which otelcol refuses, is accepted as
`RequireAndVerifyClientCert` beside `client_ca_file`, what that does anyway (a warning); `check_grpc_client` refuses TLS
settings beside `insecure: true`, which would have no effect; `check_grpc_server` keeps the
gRPC receiver at TLS 1.2 or 1.3.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from typing import Any

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration
from edgeagent.runtime.reload import Reloading

_CLIENT_AUTH = "RequireAndVerifyClientCert"
_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
             "1.3": ssl.TLSVersion.TLSv1_3}


# Go's crypto/tls cipher suite names and OpenSSL's, TLS 1.2 and below
_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA":
    "ECDHE-ECDSA-AES256-SHA", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256":
    "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384":
    "ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
_INSECURE_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA", "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
}
_UNAVAILABLE_SUITES = ("TLS_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
                       "TLS_ECDHE_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA")


class TpmConfig(ComponentConfig):
    """configtls's `tpm` (a key held in a TPM): accepted only switched off."""
    enabled: bool = False
    path: str = ""
    owner_auth: str = ""
    auth: str = ""


class _TlsCommon(ComponentConfig):
    ca_file: str | None = None
    ca_pem: str = ""
    cert_file: str | None = None
    cert_pem: str = ""
    key_file: str | None = None
    key_pem: str = ""
    include_system_ca_certs_pool: bool = False
    cipher_suites: list[str] = Field(default_factory=list)
    include_insecure_cipher_suites: bool = False
    curve_preferences: list[str] = Field(default_factory=list)
    tpm: TpmConfig = Field(default_factory=TpmConfig)
    min_version: str = "1.2"
    max_version: str = ""
    reload_interval: Duration = 0.0

    def has_cert(self) -> bool:
        return bool(self.cert_file or self.cert_pem)

    def openssl_ciphers(self) -> str | None:
        """The OpenSSL cipher list for `cipher_suites` (None: OpenSSL's defaults; "" only TLS 1.3 names)."""
        if not self.cipher_suites:
            return None
        table = {**_SUITES, **(_INSECURE_SUITES if self.include_insecure_cipher_suites else {})}
        return ":".join(table[name] for name in self.cipher_suites if name in table)

    def _check_inline(self) -> None:
        for what in ("ca", "cert", "key"):
            if getattr(self, f"{what}_file") and getattr(self, f"{what}_pem"):
                raise ValueError(f"{what}_file and {what}_pem both set: provide either the file or the PEM, not both")
        if self.curve_preferences:
            raise ValueError("curve_preferences is not supported: Python's ssl cannot set a list of key-exchange "
                             "groups; remove it (OpenSSL's defaults include X25519, P256, P384 and P521)")
        if self.tpm.enabled:
            raise ValueError("tpm is not supported: edgeagent cannot use keys held in a TPM; use key_file or key_pem")
        for name in self.cipher_suites:
            if name in _UNAVAILABLE_SUITES:
                raise ValueError(f"cipher_suites: {name} is not available: OpenSSL 3 offers no RC4 or 3DES suites")
            if name in _INSECURE_SUITES and not self.include_insecure_cipher_suites:
                raise ValueError(f"cipher_suites: {name} is insecure; set include_insecure_cipher_suites: true to "
                                 f"allow it, as otelcol asks")
            if name not in _SUITES and name not in _TLS13_SUITES and name not in _INSECURE_SUITES:
                raise ValueError(f"cipher_suites: invalid TLS cipher suite {name!r}; use Go's names, such as "
                                 f"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")

    def _check_common(self) -> None:
        self._check_inline()
        for name in ("min_version", "max_version"):
            version = getattr(self, name)
            if version and version not in _VERSIONS:
                raise ValueError(f"{name} {version!r} is not a TLS version; use one of {', '.join(_VERSIONS)}")
        if self.min_version and self.max_version and _VERSIONS[self.min_version] > _VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        if self.has_cert() != bool(self.key_file or self.key_pem):
            missing = "key" if self.has_cert() else "cert"
            raise ValueError(f"{missing}_file is missing (or {missing}_pem): cert_file and key_file go together (a "
                             f"certificate and its private key); set both or neither")


class TlsClientConfig(_TlsCommon):
    """An exporter's `tls`: verify the server (ca_file, else the system roots); cert_file/key_file for mTLS."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    server_name_override: str = ""

    @model_validator(mode="after")
    def _check(self) -> TlsClientConfig:
        self._check_common()
        return self

    def dropped(self) -> bool:
        """`insecure` without a CA: the block is not used at all (configtls's LoadTLSConfig gives no
        config); with a CA (ca_file, ca_pem) it is used, `insecure` or not."""
        return self.insecure and not (self.ca_file or self.ca_pem)


class TlsServerConfig(_TlsCommon):
    """A receiver's `tls`: cert_file and key_file are required; client_ca_file makes client certificates required."""

    client_ca_file: str | None = None
    client_ca_file_reload: bool = False
    # not otelcol's: written in deployment guides after Prometheus' web config; see the module docstring
    client_auth_type: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TlsServerConfig:
        self._check_common()
        if not self.has_cert():
            raise ValueError("cert_file and key_file are required: a TLS server needs a certificate and its key")
        if self.client_ca_file_reload and not self.client_ca_file:
            raise ValueError("client_ca_file_reload needs client_ca_file")
        if self.client_auth_type is not None and self.client_auth_type != _CLIENT_AUTH:
            raise ValueError(f"client_auth_type {self.client_auth_type!r} is not supported: only {_CLIENT_AUTH} "
                             "(with client_ca_file), which is what client_ca_file does; remove the key otherwise")
        if self.client_auth_type is not None and not self.client_ca_file:
            raise ValueError(f"client_auth_type {_CLIENT_AUTH} needs client_ca_file, the CAs client "
                             "certificates are verified against")
        return self

    def config_warnings(self) -> list[str]:
        warnings = []
        if self.ca_file or self.ca_pem:
            warnings.append("ca_file and ca_pem have no effect on a receiver (as in otelcol); set client_ca_file "
                            "to require and verify client certificates")
        if self.include_system_ca_certs_pool and not self.client_ca_file:
            warnings.append("include_system_ca_certs_pool has no effect on a receiver without client_ca_file "
                            "(as in otelcol, where it adds the system roots to the client CAs)")
        if self.client_auth_type is not None:
            warnings.append(f"client_auth_type is not an otelcol setting (otelcol refuses it); {_CLIENT_AUTH} is "
                            "what client_ca_file does: remove it for a config otelcol runs too")
        return warnings


def _versions(context: ssl.SSLContext, cfg: _TlsCommon) -> None:
    """min_version, max_version and cipher_suites."""
    context.minimum_version = _VERSIONS[cfg.min_version or "1.2"]
    if cfg.max_version:
        context.maximum_version = _VERSIONS[cfg.max_version]
    ciphers = cfg.openssl_ciphers()
    if ciphers:
        context.set_ciphers(ciphers)
    elif ciphers == "":  # TLS 1.3 names only: no TLS 1.2 suite is left, as in Go
        context.minimum_version = ssl.TLSVersion.TLSv1_3


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from exc


def _load_chain(context: ssl.SSLContext, cfg: _TlsCommon) -> None:
    """The certificate and key of `cfg`, from files or inline PEM (OpenSSL loads only files: an inline
    one is written to a private temporary directory and removed at once)."""
    if not cfg.cert_pem and not cfg.key_pem:
        try:
            context.load_cert_chain(cfg.cert_file or "", cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the certificate {cfg.cert_file} with the key {cfg.key_file}: {exc}") from exc
        return
    with _pem_file(cfg.cert_pem, "cert.pem") as cert_file, _pem_file(cfg.key_pem, "key.pem") as key_file:
        try:
            context.load_cert_chain(cert_file or cfg.cert_file or "", key_file or cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            shown = ("cert_pem" if cfg.cert_pem else cfg.cert_file, "key_pem" if cfg.key_pem else cfg.key_file)
            raise ValueError(f"cannot load the certificate {shown[0]} with the key {shown[1]}: {exc}") from exc


@contextlib.contextmanager
def _pem_file(text: str, name: str) -> Iterator[str | None]:
    """A path OpenSSL reads `text` from while the block runs (None for no text): a file in memory where
    the system has them, else a private temporary file."""
    if not text:
        yield None
        return
    if not (hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")):
        import tempfile  # inline PEM without memory files only

        with tempfile.TemporaryDirectory(prefix="edgeagent-tls-") as directory:
            path = os.path.join(directory, name)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(text)
            yield path
        return
    descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        with os.fdopen(descriptor, "w", closefd=False) as handle:
            handle.write(text)
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)


def _load_cas(context: ssl.SSLContext, path: str, pem: bytes | None = None) -> None:
    try:
        context.load_verify_locations(cadata=(pem if pem is not None else _read(path)).decode("ascii", "replace"))
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load CA certificates from {path}: {exc}") from exc


# ---- clients -----------------------------------------------------------------------------------

def client_ssl_context(cfg: TlsClientConfig, alpn: list[str] | None = None) -> ssl.SSLContext | None:
    """The context for a client (HTTP/1.1; gRPC with `alpn=["h2"]`), read from the files now; None
    with `insecure: true` and no CA (plaintext; see TlsClientConfig.dropped).

    `server_name_override` is not part of a context: pass it as the connection's `server_hostname`."""
    if cfg.dropped():
        return None
    if cfg.ca_file or cfg.ca_pem:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        if cfg.include_system_ca_certs_pool:
            context.load_default_certs()
        _load_cas(context, cfg.ca_file or "ca_pem", cfg.ca_pem.encode() if cfg.ca_pem else None)
    else:
        context = ssl.create_default_context()  # the system roots
    _versions(context, cfg)
    if cfg.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.has_cert():
        _load_chain(context, cfg)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def client_files(cfg: TlsClientConfig) -> list[str | None]:
    return [cfg.ca_file, cfg.cert_file, cfg.key_file]


def reloading_client_context(cfg: TlsClientConfig, alpn: list[str] | None = None) -> Reloading[ssl.SSLContext | None]:
    """`get()` gives the current client context, built again when a certificate file changed."""
    return Reloading(client_files(cfg), lambda: client_ssl_context(cfg, alpn), cfg.reload_interval)


def server_ssl_context(cfg: TlsServerConfig, alpn: list[str] | None = None) -> ssl.SSLContext:
    """The context for a server (HTTP/1.1; gRPC with `alpn=["h2"]`); it swaps in new certificates
    when the files change."""
    fixed_client_ca = None
    if cfg.client_ca_file and not cfg.client_ca_file_reload:
        fixed_client_ca = _read(cfg.client_ca_file)

    def build() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _versions(context, cfg)
        _load_chain(context, cfg)
        if alpn:
            context.set_alpn_protocols(alpn)
        if cfg.client_ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
            if cfg.include_system_ca_certs_pool:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
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
    `insecure: true` and no CA would have no effect (with a CA the block is used: `dropped`)."""
    if cfg is not None and cfg.dropped():
        ignored = [name for name in ("ca_file", "ca_pem", "cert_file", "cert_pem", "key_file", "key_pem",
                                     "insecure_skip_verify", "server_name_override") if getattr(cfg, name)]
        if ignored:
            raise ValueError(f"insecure: true without ca_file or ca_pem turns TLS off, so {', '.join(ignored)} "
                             f"would have no effect; remove {'them' if len(ignored) > 1 else 'it'} or set "
                             f"insecure: false")
    return cfg


def check_grpc_server(cfg: TlsServerConfig | None) -> TlsServerConfig | None:
    """Validation for a gRPC receiver's `tls` (use as a field validator)."""
    if cfg is not None:
        _check_grpc_versions(cfg)
    return cfg


def _check_grpc_versions(cfg: _TlsCommon) -> None:
    if cfg.min_version not in ("", "1.2") or cfg.max_version not in ("", "1.3"):
        raise ValueError("gRPC needs TLS 1.2 or 1.3: leave min_version at 1.2 and max_version unset (or 1.3)")
