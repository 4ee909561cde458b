"""What the `otlp` exporter's endpoint names, read as otelcol's configgrpc and grpc-go read it.

- `host:port`, after `http://` (plaintext), `https://` (TLS), `dns:///` or `passthrough:///`.
  The port is required, as otelcol's validation requires it (`missing port in address`): grpc's
  default of 443 is never taken.
- `unix:///absolute/path`, `unix:/absolute/path`, `unix:relative/path` and `unix-abstract:name`
  (Linux's abstract namespace), as grpc-go's unix resolver takes them: the URL's path, else its
  opaque part; a host (`unix://run/x.sock`) is refused, as grpc-go refuses it. otelcol 0.165's
  validation passes only the `unix://` form (it reads the others as host:port with a bad port).
- `dns://server/host:port` names the DNS server to ask; edgeagent resolves with the system's
  resolver, which cannot be pointed at one server, so it is refused naming the form it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edgeagent.config.types import endpoint_port, host_and_port

_RESOLVERS = ("dns:///", "passthrough:///")  # gRPC target schemes whose address is host:port
_UNIX = ("unix", "unix-abstract")


@dataclass(frozen=True)
class GrpcTarget:
    host: str = ""
    port: int = 0
    unix_path: str = ""  # a unix socket's address: a path, or "\0name" in the abstract namespace
    plaintext: bool | None = None  # http:// and https:// decide it; None: tls.insecure does


def parse(endpoint: str) -> GrpcTarget:
    """The target `endpoint` names; ValueError saying what is wrong and what to write instead."""
    scheme = endpoint.partition(":")[0]
    if scheme in _UNIX:
        return GrpcTarget(unix_path=_unix_address(endpoint, scheme))
    address, plaintext = endpoint, None
    if endpoint.startswith("http://"):
        address, plaintext = endpoint[len("http://"):].rstrip("/"), True
    elif endpoint.startswith("https://"):
        address, plaintext = endpoint[len("https://"):].rstrip("/"), False
    for resolver in _RESOLVERS:  # grpc-go dials the host:port after them
        address = address.removeprefix(resolver)
    if address.startswith("dns://"):
        server, _, rest = address[len("dns://"):].partition("/")
        raise ValueError(f"endpoint {endpoint!r} asks the DNS server {server} for the name; edgeagent resolves names "
                         f"with the system resolver, which cannot be pointed at one server: write dns:///{rest} "
                         f"(or {rest}) and set the server in the system's resolver configuration")
    if "://" in address:
        raise ValueError(f"endpoint {endpoint!r}: expected host:port, optionally after http://, https://, dns:/// "
                         f"or passthrough:///, or a unix socket (unix:///path, unix-abstract:name); other gRPC "
                         f"targets ({address.partition(':')[0]}) are not supported")
    if endpoint_port(address) is None:
        raise ValueError(f"endpoint {endpoint!r}: address {address}: missing port in address, as otelcol refuses "
                         f"it: add the port, e.g. {endpoint.rstrip('/')}:4317")
    host, port = host_and_port(address, 0)
    return GrpcTarget(host or "0.0.0.0", port, plaintext=plaintext)


def _unix_address(endpoint: str, scheme: str) -> str:
    rest = endpoint[len(scheme) + 1:]
    if rest.startswith("/"):  # a URL with a path: grpc-go takes the path, decoded, and refuses a host
        parts = urlsplit(endpoint)
        if parts.netloc:
            raise ValueError(f"endpoint {endpoint!r}: a unix socket target takes no host, and grpc-go refuses "
                             f"{parts.netloc!r}: write unix:///absolute/path or unix:relative/path")
        path = unquote(parts.path)
    else:  # opaque: as written, up to a query or fragment
        path = rest.split("#")[0].split("?")[0]
    if not path:
        raise ValueError(f"endpoint {endpoint!r}: unix socket path cannot be empty: write unix:///path/to/socket")
    return "\0" + path if scheme == "unix-abstract" else path
