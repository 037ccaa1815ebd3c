"""Which server layers a process runs, as configured; server.py builds the chain of them."""

from dataclasses import dataclass, field

from interceptors.server.backpressure import BackpressureSettings
from interceptors.server.deadlines import DeadlineSettings
from interceptors.server.streams import StreamSettings


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
    """Unary calls in flight; streams take no slot of it."""
    streams: StreamSettings | None = field(default_factory=StreamSettings)
    """Streams open per connection and per server, and their idle timeout."""
    max_concurrent_streams: int = 1000
    """HTTP/2 streams (calls of any kind) at once on one connection, as the server tells each
    client (grpc.max_concurrent_streams), so one connection cannot hold more calls than the
    server's whole unary limit, and one whose long-lived streams are all open still has room
    for unary calls. Not lower by default: a client queues calls past it only once it has
    the server's SETTINGS, and a burst on a new connection is refused (REFUSED_STREAM,
    UNAVAILABLE), which 216 parallel calls on a new channel met at 100. Backpressure is
    what refuses excess calls, with a code and a retry hint."""

    def __post_init__(self) -> None:
        per_connection = self.streams.max_per_connection if self.streams else 0
        if self.max_concurrent_streams <= per_connection:
            raise ValueError(
                f"max_concurrent_streams ({self.max_concurrent_streams}) must exceed the "
                f"streams allowed per connection ({per_connection}), or no room is left on "
                "a connection for unary calls"
            )


DEFAULT_LAYERS = ServerLayers()
"""Every interceptor on, with default settings."""
