"""The services and consumer groups this build can run: the one place that knows them all."""

from collections.abc import Mapping

from services import audit
from services.audit.consumer import GROUP as AUDIT_GROUP
from services.audit.consumer import build_consumer as build_audit_consumer
from services.content.service import SPEC as CONTENT
from services.runtime.events.workers import ConsumerSpec
from services.runtime.service import ServiceSpec
from services.user.service import SPEC as USER

SERVICES: Mapping[str, ServiceSpec] = {spec.name: spec for spec in (USER, CONTENT)}

CONSUMERS: Mapping[str, ConsumerSpec] = {
    AUDIT_GROUP: ConsumerSpec(
        group=AUDIT_GROUP,
        schema=audit.SCHEMA,
        migrations=audit.MIGRATIONS,
        build=build_audit_consumer,
    )
}
"""Consumer groups by name; `nova up` runs them all, `nova events consume --group` one."""
