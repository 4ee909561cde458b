"""Test certificates: a CA, and server and client certificates it signs, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Authority:
    """A CA that signs server and client certificates into `directory`."""

    directory: str
    name: str = "edgeagent test CA"

    def __post_init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self._subject = subject
        self.cert = (self._builder(subject, self._key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)  # keyCertSign, cRLSign
                     .sign(self._key, hashes.SHA256()))
        self.ca_file = os.path.join(self.directory, f"{_slug(self.name)}.crt")
        _write(self.ca_file, self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        """With the key identifiers that strict verification (urllib3 2, Python 3.13) asks for."""
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False))

    def issue(self, name: str, server: bool = True) -> tuple[str, str]:
        """Write `name`.crt and `name`.key; a server certificate is for 127.0.0.1, ::1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)  # digitalSignature
                .sign(self._key, hashes.SHA256()))
        cert_file = os.path.join(self.directory, f"{name}.crt")
        key_file = os.path.join(self.directory, f"{name}.key")
        _write(cert_file, cert.public_bytes(serialization.Encoding.PEM))
        _write(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return cert_file, key_file


@dataclass
class Certs:
    """What the `certs` fixture gives: a CA with a server and a client certificate."""

    ca: Authority
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @property
    def ca_file(self) -> str:
        return self.ca.ca_file


def make_certs(directory: str) -> Certs:
    ca = Authority(directory)
    server_cert, server_key = ca.issue("server")
    client_cert, client_key = ca.issue("client", server=False)
    return Certs(ca, server_cert, server_key, client_cert, client_key)


def replace(source: str, target: str) -> None:
    """Put `source`'s content at `target` atomically, as a certificate rotation does."""
    with open(source, "rb") as handle:
        data = handle.read()
    _write(target + ".new", data)
    os.replace(target + ".new", target)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())
