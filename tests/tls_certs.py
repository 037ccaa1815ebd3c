"""A certificate authority and the certificates it signs, made at test time (cryptography):
servers' for localhost and 127.0.0.1, clients' for mutual TLS.

    certs = Certificates.create(tmp_path)
    Config.from_env(certs.env(mutual=True), default_ports=...)

P-256 keys, since making one takes microseconds where an RSA key takes tens of ms.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, PEM, as written to `<name>.pem` and `<name>-key.pem`."""

    cert: bytes
    key: bytes
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Authority:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: bytes
    cert_file: Path

    @classmethod
    def create(cls, folder: Path, common_name: str = "Nova test CA") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        path = folder / f"{common_name.replace(' ', '-').lower()}.pem"
        path.write_bytes(pem)
        return cls(name=name, key=key, cert=pem, cert_file=path)

    def issue(
        self,
        folder: Path,
        file_name: str,
        *,
        hosts: tuple[str, ...] = HOSTS,
        usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
    ) -> Issued:
        """A certificate for `hosts` (DNS names or IP addresses) with the given extended
        key usages, signed by this authority."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, file_name)])
        names = [_general_name(host) for host in hosts]
        builder = _builder(subject, self.name, key.public_key())
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False).sign(
            self.key, hashes.SHA256()
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_file, key_file = folder / f"{file_name}.pem", folder / f"{file_name}-key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        return Issued(cert=cert_pem, key=key_pem, cert_file=cert_file, key_file=key_file)


@dataclass(frozen=True)
class Certificates:
    """A CA; a server certificate it signed (good for clients too, as a process's servers'
    pair doubles as its clients' identity); a client certificate; and another CA's."""

    ca: Authority
    server: Issued
    client: Issued
    stranger_ca: Authority
    """Signed nothing here: trusting it instead of `ca` must fail."""

    @classmethod
    def create(cls, folder: Path) -> Certificates:
        ca = Authority.create(folder)
        server = ca.issue(
            folder,
            "server",
            usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        client = ca.issue(folder, "client", hosts=(), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
        return cls(ca, server, client, Authority.create(folder, "Stranger CA"))

    def env(self, *, mutual: bool = False) -> dict[str, str]:
        """NOVA_TLS_* for servers with the server pair and clients trusting the CA; with
        `mutual`, servers require client certificates from the CA."""
        env = {
            "NOVA_TLS_CERT_FILE": str(self.server.cert_file),
            "NOVA_TLS_KEY_FILE": str(self.server.key_file),
            "NOVA_TLS_CA_FILE": str(self.ca.cert_file),
        }
        if mutual:
            env["NOVA_TLS_CLIENT_CA_FILE"] = str(self.ca.cert_file)
        return env


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
