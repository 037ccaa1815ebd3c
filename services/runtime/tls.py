"""TLS from the NOVA_TLS_* files, read and checked once at start: a missing, unreadable,
malformed or mismatched file stops the process with the variable's name, instead of every
handshake failing later with a status that names nothing.

    NOVA_TLS_CERT_FILE + NOVA_TLS_KEY_FILE          servers listen with TLS
    NOVA_TLS_CLIENT_CA_FILE                         ... and require client certificates
                                                    that CA signed (mutual TLS)
    NOVA_TLS_CA_FILE                                clients (gateway, seed, services) use
                                                    TLS and trust that CA
    NOVA_TLS_CLIENT_CERT_FILE + ..._CLIENT_KEY_FILE the clients' certificate for mutual
                                                    TLS; by default the servers' pair

None set: plaintext everywhere, as `nova up` on localhost has always run.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from interceptors.client.tls import ChannelTls
from services.runtime.env import ConfigError, EnvReader

MAX_PEM_BYTES = 1_000_000
"""Per file: a certificate chain is a few kilobytes, a system CA bundle about 220 KB."""


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key (PEM), and the CA its clients' certificates
    must chain to when it requires them."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None
    """Set: a client without a certificate this CA signed is refused (mutual TLS)."""

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class TlsSettings:
    server: ServerTls | None = None
    """None: servers listen in plaintext."""
    client: ChannelTls | None = None
    """None: clients call in plaintext."""


def tls_settings(read: EnvReader) -> TlsSettings:
    """The servers' and the clients' TLS from the NOVA_TLS_* variables (see the module)."""
    server_pair = _pair(read, "NOVA_TLS_CERT_FILE", "NOVA_TLS_KEY_FILE")
    own_pair = _pair(read, "NOVA_TLS_CLIENT_CERT_FILE", "NOVA_TLS_CLIENT_KEY_FILE")
    client_ca = _certificates(read, "NOVA_TLS_CLIENT_CA_FILE")
    roots = _certificates(read, "NOVA_TLS_CA_FILE")
    if client_ca is not None and server_pair is None:
        raise ConfigError(
            "NOVA_TLS_CLIENT_CA_FILE is set but NOVA_TLS_CERT_FILE is not: servers can only "
            "ask for client certificates over TLS; set NOVA_TLS_CERT_FILE and NOVA_TLS_KEY_FILE"
        )
    if roots is None and (server_pair or own_pair):
        set_name = "NOVA_TLS_CERT_FILE" if server_pair else "NOVA_TLS_CLIENT_CERT_FILE"
        raise ConfigError(
            f"NOVA_TLS_CA_FILE is not set but {set_name} is: set it to the CA certificate "
            "that signed the services' certificates, so that this process's clients (the "
            "gateway, seed) call them over TLS too"
        )
    server = None
    if server_pair is not None:
        server = ServerTls(*server_pair, client_ca=client_ca)
    client = None
    if roots is not None:
        identity = own_pair or server_pair
        client = ChannelTls(roots, *(identity or (None, None)))
    return TlsSettings(server=server, client=client)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (plaintext is fine there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _pair(read: EnvReader, cert_name: str, key_name: str) -> tuple[bytes, bytes] | None:
    """A certificate chain and its key, both PEM, the key unencrypted and matching."""
    cert_path, key_path = read.existing_file(cert_name), read.existing_file(key_name)
    if cert_path is None and key_path is None:
        return None
    if cert_path is None or key_path is None:
        given, missing = (cert_name, key_name) if key_path is None else (key_name, cert_name)
        raise ConfigError(f"{given} is set but {missing} is not; TLS needs both, or neither")
    chain, key = _pem_certificates(cert_path, cert_name), _read(key_path, key_name)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            cert_path, key_path, password=_refuse_password
        )
    except _Encrypted:
        raise ConfigError(
            f"{key_name} holds an encrypted key; gRPC needs it unencrypted "
            f"(e.g. `openssl pkey -in {key_path} -out plain-key.pem`)"
        ) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{key_name} holds a key that is not the one of the certificate in {cert_name}"
            ) from None
        raise ConfigError(f"{key_name} must hold a PEM private key; {key_path} does not") from None
    return chain, key


def _certificates(read: EnvReader, name: str) -> bytes | None:
    """The PEM certificates of the file `name` names (at least one), or None if unset."""
    path = read.existing_file(name)
    return None if path is None else _pem_certificates(path, name)


def _pem_certificates(path: Path, name: str) -> bytes:
    pem = _read(path, name)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError(f"{name} must hold PEM certificates; {path} holds none") from None
    return pem


def _read(path: Path, name: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{name}: cannot read {path} ({error.strerror})") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{name} names a file over {MAX_PEM_BYTES} bytes ({path}); is it PEM?")
    return data


class _Encrypted(Exception):
    """A key asked for a password (which a server has no one to ask)."""


def _refuse_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and a server would hang.
    raise _Encrypted
