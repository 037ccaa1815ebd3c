"""Which server interceptors a process runs, as configured; server.py builds the chain."""

from dataclasses import dataclass, field

from interceptors.backpressure import BackpressureSettings
from interceptors.deadlines import DeadlineSettings


@dataclass(frozen=True)
class ServerChain:
    """Which optional interceptors run, with their settings; False or None leaves one out.

    Error mapping and auth always run: without them a bug's text would reach the caller and
    a bad token would pass as anonymous.
    """

    request_context: bool = True
    telemetry: bool = True
    access_log: bool = True
    deadlines: DeadlineSettings | None = field(default_factory=DeadlineSettings)
    backpressure: BackpressureSettings | None = field(default_factory=BackpressureSettings)


DEFAULT_CHAIN = ServerChain()
"""Every interceptor on, with default settings."""
