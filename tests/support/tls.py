"""Certificates made in the test: a CA, server and client certificates, in PEM.

For TLS backends on 127.0.0.1 and the outbound options that trust them
(C{caFile}, C{clientCert}, C{clientKey}).  Keys are small EC keys, made fast.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions

_DAY = datetime.timedelta(days=1)


@frozen
class Issued:
    """A key and its certificate, in PEM."""

    key: bytes
    cert: bytes

    @property
    def pem(self) -> bytes:
        """The key followed by the certificate, as one file can hold both."""
        return self.key + self.cert

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write C{name}.key and C{name}.crt into C{directory}; their paths."""
        key, cert = directory / f"{name}.key", directory / f"{name}.crt"
        key.write_bytes(self.key)
        cert.write_bytes(self.cert)
        return key, cert


class CertificateAuthority:
    """A throwaway CA that issues server and client certificates."""

    def __init__(self, name: str = "nfork test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert(self) -> bytes:
        """The CA certificate, in PEM (what a C{caFile} holds)."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, *names: str, client: bool = False) -> Issued:
        """A certificate for C{names} (host names or IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        usage = (
            ExtendedKeyUsageOID.CLIENT_AUTH
            if client
            else ExtendedKeyUsageOID.SERVER_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
            )
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
        )
        if alternatives:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternatives), False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            cert.public_bytes(serialization.Encoding.PEM),
        )


def server_tls_options(
    server: Issued, require_client_from: CertificateAuthority | None = None
) -> CertificateOptions:
    """TLS settings for a test backend presenting C{server}.

    With C{require_client_from}, the backend refuses clients without a
    certificate issued by that CA.
    """
    options = CertificateOptions(
        privateKey=load_pem_private_key(server.key, None),  # type: ignore[arg-type]
        certificate=x509.load_pem_x509_certificate(server.cert),  # type: ignore[arg-type]
    )
    if require_client_from is not None:
        context = options.getContext()
        store = context.get_cert_store()
        assert store is not None
        store.add_cert(
            crypto.X509.from_cryptography(
                x509.load_pem_x509_certificate(require_client_from.cert)
            )
        )
        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            lambda *args: bool(args[-1]),
        )
    return options
