"""The RPC pool hands a connection on without asyncpg's reset round trip (its users keep
no session state), yet never with a transaction left open; the events pool still resets
(the relay's LISTEN and a consumer's session lock end with the connection's loan)."""

import pytest

from services.runtime.db import open_database


@pytest.mark.parametrize("session_state", [False, True])
async def test_a_released_connection_is_reset_only_in_a_pool_with_session_state(
    database_url: str, session_state: bool
) -> None:
    async with open_database(
        database_url, size=1, acquire_timeout_ms=1000, session_state=session_state
    ) as db:
        async with db.connection() as conn:
            await conn.execute("SET application_name = 'left-behind'")
        async with db.connection() as conn:
            name = await conn.fetchval("SHOW application_name")
    assert (name == "left-behind") is not session_state


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    async with open_database(
        database_url, size=1, acquire_timeout_ms=1000, session_state=False
    ) as db:
        async with db.connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("CREATE TEMP TABLE never_committed (x int)")
        async with db.connection() as conn:
            assert not conn.is_in_transaction()
            exists = await conn.fetchval("SELECT to_regclass('pg_temp.never_committed')")
    assert exists is None
