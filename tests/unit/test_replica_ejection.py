"""How long an ejected replica stays out: doubling for each ejection in a row, capped, and
back to the base once it has stayed in for the longest ejection."""

import pytest

from interceptors.client.replicas import EjectionSettings, Replica
from interceptors.client.targets import Endpoint

SETTINGS = EjectionSettings(base_seconds=1, max_seconds=5)


def test_ejections_in_a_row_double_up_to_the_longest_and_a_quiet_spell_resets_them() -> None:
    replica = Replica(Endpoint("10.0.0.7:50051"), slots=[])
    now = 100.0
    seconds = []
    for _ in range(4):
        seconds.append(replica.eject(now, SETTINGS))
        assert replica.eject(now, SETTINGS) is None  # already out: no second ejection
        assert not replica.probe_due(now)
        assert replica.ejected_until is not None
        now = replica.ejected_until
        assert replica.probe_due(now)
        replica.restore(now)
    assert seconds == [1, 2, 4, 5]
    assert replica.eject(now + 4.9, SETTINGS) == 5
    replica.restore(now + 10)
    assert replica.eject(now + 15, SETTINGS) == 1


def test_ejection_settings_refuse_a_base_longer_than_the_longest() -> None:
    with pytest.raises(ValueError, match="0 < base <= max"):
        EjectionSettings(base_seconds=10, max_seconds=5)
