"""The gateway refuses to start without a target for a service its resolvers call."""

import pytest

from gateway.clients import open_clients


async def test_a_missing_target_is_named_before_anything_connects() -> None:
    with pytest.raises(ValueError, match="the user, content, feed, analytics service"):
        async with open_clients({}):
            pass
