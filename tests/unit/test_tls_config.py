"""NOVA_TLS_* are read at start into the servers' and the clients' TLS, and every file that
is missing, malformed, too large or mismatched stops the start naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from interceptors.client.tls import ChannelTls
from services.registry import REGISTRY
from services.runtime.config import Config, ConfigError
from services.runtime.tls import MAX_PEM_BYTES, ServerTls, is_loopback
from tests.tls_certs import Certificates

PORTS = REGISTRY.default_ports


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.create(tmp_path_factory.mktemp("tls"))


def config(env: dict[str, str]) -> Config:
    return Config.from_env(env, default_ports=PORTS)


def test_without_tls_variables_servers_and_clients_stay_plaintext() -> None:
    plain = config({})
    assert plain.tls is None
    assert plain.clients.tls is None


def test_a_pair_and_a_ca_give_servers_tls_and_clients_the_pair_as_identity(
    certs: Certificates,
) -> None:
    read = config(certs.env())
    assert read.tls == ServerTls(certs.server.cert, certs.server.key, client_ca=None)
    assert read.clients.tls == ChannelTls(certs.ca.cert, certs.server.cert, certs.server.key)


def test_a_client_ca_makes_servers_require_client_certificates(certs: Certificates) -> None:
    read = config(certs.env(mutual=True))
    assert read.tls is not None
    assert read.tls.client_ca == certs.ca.cert
    read.tls.credentials()  # grpc accepts the PEM as it was read


def test_a_client_pair_of_its_own_replaces_the_servers_pair(certs: Certificates) -> None:
    env = certs.env() | {
        "NOVA_TLS_CLIENT_CERT_FILE": str(certs.client.cert_file),
        "NOVA_TLS_CLIENT_KEY_FILE": str(certs.client.key_file),
    }
    tls = config(env).clients.tls
    assert tls == ChannelTls(certs.ca.cert, certs.client.cert, certs.client.key)


def test_a_ca_alone_makes_tls_clients_of_a_process_that_serves_nothing(
    certs: Certificates,
) -> None:
    read = config({"NOVA_TLS_CA_FILE": str(certs.ca.cert_file)})
    assert read.tls is None
    assert read.clients.tls == ChannelTls(certs.ca.cert)


def test_no_private_key_shows_in_the_configuration_printed(certs: Certificates) -> None:
    shown = repr(config(certs.env(mutual=True)))
    assert "PRIVATE KEY" not in shown
    assert "BEGIN CERTIFICATE" in shown


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(ValueError, match="needs its private key"):
        ChannelTls(b"roots", certificate_chain=b"chain")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"NOVA_TLS_KEY_FILE": ""},
            "NOVA_TLS_CERT_FILE is set but NOVA_TLS_KEY_FILE is not; TLS needs both, or neither",
        ),
        ({"NOVA_TLS_CERT_FILE": ""}, "NOVA_TLS_KEY_FILE is set but NOVA_TLS_CERT_FILE is not"),
        (
            {"NOVA_TLS_CLIENT_CERT_FILE": "{client_cert}"},
            "NOVA_TLS_CLIENT_CERT_FILE is set but NOVA_TLS_CLIENT_KEY_FILE is not",
        ),
        ({"NOVA_TLS_CERT_FILE": "{missing}"}, "NOVA_TLS_CERT_FILE must name an existing file"),
        ({"NOVA_TLS_CA_FILE": "{folder}"}, "NOVA_TLS_CA_FILE must name an existing file"),
        ({"NOVA_TLS_CERT_FILE": "{garbage}"}, "NOVA_TLS_CERT_FILE must hold PEM certificates"),
        ({"NOVA_TLS_CERT_FILE": "{server_key}"}, "NOVA_TLS_CERT_FILE must hold PEM certificates"),
        ({"NOVA_TLS_KEY_FILE": "{garbage}"}, "NOVA_TLS_KEY_FILE must hold a PEM private key"),
        ({"NOVA_TLS_KEY_FILE": "{server_cert}"}, "NOVA_TLS_KEY_FILE must hold a PEM private key"),
        (
            {"NOVA_TLS_KEY_FILE": "{client_key}"},
            "NOVA_TLS_KEY_FILE holds a key that is not the one of the certificate in "
            "NOVA_TLS_CERT_FILE",
        ),
        ({"NOVA_TLS_KEY_FILE": "{encrypted_key}"}, "NOVA_TLS_KEY_FILE holds an encrypted key"),
        ({"NOVA_TLS_CA_FILE": "{garbage}"}, "NOVA_TLS_CA_FILE must hold PEM certificates"),
        (
            {"NOVA_TLS_CLIENT_CA_FILE": "{garbage}"},
            "NOVA_TLS_CLIENT_CA_FILE must hold PEM certificates",
        ),
        (
            {"NOVA_TLS_CA_FILE": ""},
            "NOVA_TLS_CA_FILE is not set but NOVA_TLS_CERT_FILE is: set it to the CA",
        ),
        (
            {
                "NOVA_TLS_CERT_FILE": "",
                "NOVA_TLS_KEY_FILE": "",
                "NOVA_TLS_CLIENT_CA_FILE": "{ca}",
            },
            "NOVA_TLS_CLIENT_CA_FILE is set but NOVA_TLS_CERT_FILE is not",
        ),
        (
            {
                "NOVA_TLS_CERT_FILE": "",
                "NOVA_TLS_KEY_FILE": "",
                "NOVA_TLS_CA_FILE": "",
                "NOVA_TLS_CLIENT_CERT_FILE": "{client_cert}",
                "NOVA_TLS_CLIENT_KEY_FILE": "{client_key}",
            },
            "NOVA_TLS_CA_FILE is not set but NOVA_TLS_CLIENT_CERT_FILE is",
        ),
    ],
)
def test_a_bad_tls_file_stops_the_start_naming_its_variable(
    certs: Certificates, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        serialization.load_pem_private_key(certs.server.key, password=None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    files = {
        "missing": str(tmp_path / "nope.pem"),
        "folder": str(tmp_path),
        "garbage": str(garbage),
        "encrypted_key": str(encrypted),
        "ca": str(certs.ca.cert_file),
        "server_cert": str(certs.server.cert_file),
        "server_key": str(certs.server.key_file),
        "client_cert": str(certs.client.cert_file),
        "client_key": str(certs.client.key_file),
    }
    env = certs.env() | {name: value.format(**files) for name, value in change.items()}
    with pytest.raises(ConfigError, match=message) as error:
        config(env)
    assert "\n" not in str(error.value)


def test_a_pem_file_may_be_as_large_as_the_limit_and_no_larger(
    certs: Certificates, tmp_path: Path
) -> None:
    """Text around PEM blocks is allowed (openssl writes a readable dump there), so the
    CA certificate padded with such text to the limit is still read."""
    preamble = b"# bundle\n" * ((MAX_PEM_BYTES - len(certs.ca.cert)) // 9)
    at_limit = preamble + b"#" * (MAX_PEM_BYTES - len(certs.ca.cert) - len(preamble) - 1) + b"\n"
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(at_limit + certs.ca.cert)
    assert bundle.stat().st_size == MAX_PEM_BYTES
    env = {"NOVA_TLS_CA_FILE": str(bundle)}
    tls = config(env).clients.tls
    assert tls is not None
    assert tls.root_certificates.endswith(certs.ca.cert)

    bundle.write_bytes(b"\n" + at_limit + certs.ca.cert)
    with pytest.raises(ConfigError, match=f"NOVA_TLS_CA_FILE names a file over {MAX_PEM_BYTES}"):
        config(env)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("user.internal", False),
    ],
)
def test_only_loopback_hosts_count_as_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
