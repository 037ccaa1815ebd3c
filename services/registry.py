"""The services and consumer groups this build runs: the one place that lists them all.

Adding a service is its folder (services/<name>/service.py declares its SPEC) plus one
line here.
"""

from services.analytics.service import SPEC as ANALYTICS
from services.audit.service import SPEC as AUDIT
from services.content.service import SPEC as CONTENT
from services.feed.service import SPEC as FEED
from services.runtime.spec import Registry
from services.tenant.service import SPEC as TENANT
from services.user.service import SPEC as USER

REGISTRY = Registry.of(
    services=[
        USER,
        CONTENT,
        FEED,
        ANALYTICS,
        TENANT,
    ],
    consumers=[AUDIT],
)
