"""Kafka durability and access settings: production-safe defaults, bounded values, and a
one-line error naming the variable when a combination cannot work."""

import ssl
from pathlib import Path

import pytest

from services.runtime.config_sections import event_settings
from services.runtime.env import ConfigError, EnvReader
from services.runtime.events.kafka import KafkaTransport, connection_options
from services.runtime.events.settings import EventSettings, KafkaAccess
from tests.tls_certs import Certificates


def _settings(env: dict[str, str]) -> EventSettings:
    return event_settings(EnvReader(env))


def test_defaults_replicate_three_ways_idempotently_without_security() -> None:
    settings = _settings({})
    assert settings.kafka_replication_factor == 3
    assert settings.kafka_min_insync_replicas == 2
    assert settings.kafka_idempotent is True
    assert settings.kafka_retention_seconds == 168 * 3600
    assert settings.kafka_access == KafkaAccess()
    assert settings.kafka_access.security_protocol == "PLAINTEXT"


def test_min_insync_replicas_defaults_below_the_factor_and_at_least_one() -> None:
    assert _settings({"NOVA_KAFKA_REPLICATION_FACTOR": "1"}).kafka_min_insync_replicas == 1
    assert _settings({"NOVA_KAFKA_REPLICATION_FACTOR": "5"}).kafka_min_insync_replicas == 4


def test_values_at_their_limits_are_accepted() -> None:
    settings = _settings(
        {
            "NOVA_KAFKA_REPLICATION_FACTOR": "100",
            "NOVA_KAFKA_MIN_INSYNC_REPLICAS": "100",
            "NOVA_KAFKA_RETENTION_HOURS": "100000",
            "NOVA_KAFKA_IDEMPOTENT": "false",
        }
    )
    assert settings.kafka_replication_factor == 100
    assert settings.kafka_min_insync_replicas == 100
    assert settings.kafka_retention_seconds == 100_000 * 3600
    assert settings.kafka_idempotent is False
    assert _settings({"NOVA_KAFKA_RETENTION_HOURS": "1"}).kafka_retention_seconds == 3600


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOVA_KAFKA_REPLICATION_FACTOR": "0"}, "NOVA_KAFKA_REPLICATION_FACTOR must be a whole"),
        ({"NOVA_KAFKA_REPLICATION_FACTOR": "101"}, "NOVA_KAFKA_REPLICATION_FACTOR must be"),
        (
            {"NOVA_KAFKA_REPLICATION_FACTOR": "3", "NOVA_KAFKA_MIN_INSYNC_REPLICAS": "4"},
            "NOVA_KAFKA_MIN_INSYNC_REPLICAS must be a whole number from 1 to 3",
        ),
        ({"NOVA_KAFKA_MIN_INSYNC_REPLICAS": "0"}, "NOVA_KAFKA_MIN_INSYNC_REPLICAS must be"),
        ({"NOVA_KAFKA_RETENTION_HOURS": "0"}, "NOVA_KAFKA_RETENTION_HOURS must be a whole"),
        ({"NOVA_KAFKA_RETENTION_HOURS": "100001"}, "NOVA_KAFKA_RETENTION_HOURS must be"),
        ({"NOVA_KAFKA_IDEMPOTENT": "perhaps"}, "NOVA_KAFKA_IDEMPOTENT"),
        ({"NOVA_KAFKA_TLS_CA_FILE": "/nonexistent/ca.pem"}, "NOVA_KAFKA_TLS_CA_FILE must name"),
        ({"NOVA_KAFKA_SASL_MECHANISM": "GSSAPI"}, "NOVA_KAFKA_SASL_MECHANISM must be one of"),
        (
            {"NOVA_KAFKA_SASL_MECHANISM": "PLAIN", "NOVA_KAFKA_SASL_USERNAME": "nova"},
            "NOVA_KAFKA_SASL_MECHANISM=PLAIN needs both NOVA_KAFKA_SASL_USERNAME and",
        ),
        (
            {"NOVA_KAFKA_SASL_USERNAME": "nova", "NOVA_KAFKA_SASL_PASSWORD": "pw"},
            "NOVA_KAFKA_SASL_MECHANISM is not",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        _settings(env)
    assert "\n" not in str(raised.value)


def test_a_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not read here")
    with pytest.raises(ConfigError, match="NOVA_KAFKA_TLS_CERT_FILE and NOVA_KAFKA_TLS_KEY_FILE"):
        _settings({"NOVA_KAFKA_TLS_CERT_FILE": str(cert)})


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_is_read_and_the_password_stays_out_of_repr(mechanism: str) -> None:
    settings = _settings(
        {
            "NOVA_KAFKA_SASL_MECHANISM": mechanism,
            "NOVA_KAFKA_SASL_USERNAME": "nova",
            "NOVA_KAFKA_SASL_PASSWORD": "hunter2-secret",
        }
    )
    access = settings.kafka_access
    assert access.sasl_mechanism == mechanism.upper()
    assert access.security_protocol == "SASL_PLAINTEXT"
    assert "hunter2-secret" not in repr(settings)
    assert connection_options(access) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism.upper(),
        "sasl_plain_username": "nova",
        "sasl_plain_password": "hunter2-secret",
    }


def test_tls_files_give_a_verifying_context_with_the_client_pair(tmp_path: Path) -> None:
    certificates = Certificates.create(tmp_path)
    access = _settings(
        {
            "NOVA_KAFKA_TLS_CA_FILE": str(certificates.ca.cert_file),
            "NOVA_KAFKA_TLS_CERT_FILE": str(certificates.client.cert_file),
            "NOVA_KAFKA_TLS_KEY_FILE": str(certificates.client.key_file),
            "NOVA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "NOVA_KAFKA_SASL_USERNAME": "nova",
            "NOVA_KAFKA_SASL_PASSWORD": "pw",
        }
    ).kafka_access
    options = connection_options(access)
    assert options["security_protocol"] == "SASL_SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    assert (
        _settings(
            {"NOVA_KAFKA_TLS_CA_FILE": str(certificates.ca.cert_file)}
        ).kafka_access.security_protocol
        == "SSL"
    )


def test_topics_nova_creates_carry_replication_insync_and_retention() -> None:
    settings = EventSettings(
        kafka_partitions=4,
        kafka_replication_factor=3,
        kafka_min_insync_replicas=2,
        kafka_retention_seconds=48 * 3600,
    )
    topic = KafkaTransport.from_settings("broker:9092", settings).new_topic("nova.post.v1")
    assert (topic.name, topic.num_partitions, topic.replication_factor) == ("nova.post.v1", 4, 3)
    assert topic.topic_configs == {"retention.ms": "172800000", "min.insync.replicas": "2"}
