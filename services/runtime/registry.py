"""The services this build can run, by short name: the one place that knows them all."""

from collections.abc import Mapping

from services.content.service import SPEC as CONTENT
from services.runtime.service import ServiceSpec
from services.user.service import SPEC as USER

SERVICES: Mapping[str, ServiceSpec] = {spec.name: spec for spec in (USER, CONTENT)}
