"""Which server layers a process runs, as configured; server.py builds the chain of them."""

from dataclasses import dataclass, field

from interceptors.server.backpressure import BackpressureSettings
from interceptors.server.deadlines import DeadlineSettings


@dataclass(frozen=True)
class ServerLayers:
    """Which optional interceptors run, with their settings; False or None leaves one out.

    Error mapping and auth always run: without them a bug's text would reach the caller and
    a bad token would pass as anonymous.
    """

    propagated: bool = True
    telemetry: bool = True
    access_log: bool = True
    deadlines: DeadlineSettings | None = field(default_factory=DeadlineSettings)
    backpressure: BackpressureSettings | None = field(default_factory=BackpressureSettings)


DEFAULT_LAYERS = ServerLayers()
"""Every interceptor on, with default settings."""
