"""Every domain error has a status code, found along the class hierarchy."""

import grpc

from interceptors.server.errors import ErrorMapping
from services.runtime import errors


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_every_domain_error_is_mapped_to_a_status_code() -> None:
    mapping = ErrorMapping(errors.STATUS_BY_ERROR)
    for cls in _all_subclasses(errors.NovaError):
        assert mapping.status_for(cls("x")) is not None, cls


def test_subclasses_inherit_their_parents_code_and_strangers_have_none() -> None:
    class HandleTaken(errors.AlreadyExists):
        pass

    mapping = ErrorMapping(errors.STATUS_BY_ERROR)
    assert mapping.status_for(HandleTaken("x")) == grpc.StatusCode.ALREADY_EXISTS
    assert mapping.status_for(KeyError("x")) is None
