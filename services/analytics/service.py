"""The analytics service's SPEC: AnalyticsService over ClickHouse (chdb embedded, or a
server), its insert batcher, and the consumer group that loads every domain event."""

from pathlib import Path

from grpc import aio

from nova.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics import repository
from services.analytics.batcher import Batcher
from services.analytics.events import GROUP, build_consumer
from services.analytics.journal import SCHEMA
from services.analytics.merging import MergedReads
from services.analytics.servicer import AnalyticsServicer
from services.runtime.events.consumer import Consumer
from services.runtime.spec import (
    Closer,
    ConsumerContext,
    ConsumerSpec,
    Dependencies,
    ServiceSpec,
)
from services.runtime.validation import validated

_SERVICE = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"]
_MIGRATIONS = Path(__file__).parent / "migrations"


def _add_to_server(server: aio.Server, deps: Dependencies) -> Closer:
    clickhouse = deps.clickhouse
    if clickhouse is None:
        raise RuntimeError("the analytics service needs ClickHouse (its SPEC has a schema)")
    settings = deps.config.analytics
    batcher = Batcher(deps.db, clickhouse, settings)
    reads = MergedReads(
        lambda tenant, ids: repository.post_metrics(clickhouse, tenant, ids),
        settings.merge_window_seconds,
        max_ids=settings.max_merged_ids,
    )
    servicer = AnalyticsServicer(deps.db, clickhouse, batcher, reads)
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(validated(servicer, _SERVICE), server)
    batcher.start()

    async def close() -> None:
        await reads.close()
        await batcher.close()

    return close


def _build_consumer(context: ConsumerContext) -> Consumer:
    return build_consumer(context.transport, context.db, context.topics)


CONSUMER = ConsumerSpec(group=GROUP, schema=SCHEMA, migrations=_MIGRATIONS, build=_build_consumer)

SPEC = ServiceSpec(
    name="analytics",
    service=_SERVICE,
    stub=analytics_pb2_grpc.AnalyticsServiceStub,
    default_port=50054,
    schema=SCHEMA,
    migrations=_MIGRATIONS,
    add_to_server=_add_to_server,
    consumers=(CONSUMER,),
    clickhouse_migrations=Path(__file__).parent / "clickhouse",
)
