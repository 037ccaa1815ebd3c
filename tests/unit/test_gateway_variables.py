"""The variables JSON: nesting and number of values bounded (at the limit and one past
it), unpaired surrogates refused wherever they are, big containers refused whole."""

from typing import Any

import pytest

from gateway.errors import BadRequest, LimitExceeded
from gateway.settings import GatewaySettings
from gateway.variables import check_variables

SETTINGS = GatewaySettings(max_variables_depth=3, max_variable_values=10)


def nested(depth: int) -> Any:
    """A value reaching `depth` when it is a variable's value: [[..."x"...]]."""
    value: Any = "x"
    for _ in range(depth - 1):
        value = [value]
    return value


def test_the_schemas_deepest_input_fits_the_default() -> None:
    check_variables({"input": {"interests": ["jazz", "go"]}}, GatewaySettings())


def test_nesting_is_allowed_up_to_the_limit() -> None:
    check_variables({"v": nested(3)}, SETTINGS)
    with pytest.raises(LimitExceeded) as raised:
        check_variables({"v": {"a": nested(3)}}, SETTINGS)
    assert raised.value.extensions == {
        "code": "QUERY_LIMIT_EXCEEDED",
        "limit": "maxVariablesDepth",
        "value": 4,
        "maximum": 3,
    }
    assert raised.value.message == (
        "variable $v.a[0][0] is nested 4 levels deep; at most 3 are allowed (maxVariablesDepth)"
    )


def test_values_are_counted_up_to_the_limit() -> None:
    check_variables({"a": [1, 2, 3, 4], "b": {"c": 1, "d": [None, True]}}, SETTINGS)  # 10
    with pytest.raises(LimitExceeded) as raised:
        check_variables({"a": [1, 2, 3, 4, 5], "b": {"c": 1, "d": [None, True]}}, SETTINGS)
    assert raised.value.extensions["limit"] == "maxVariableValues"
    assert raised.value.extensions["maximum"] == 10


def test_a_huge_list_is_refused_as_it_is_opened() -> None:
    with pytest.raises(LimitExceeded) as raised:
        check_variables({"ids": list(range(1_000_000))}, GatewaySettings())
    assert raised.value.extensions["value"] == 1_000_001


def test_too_many_variables_are_refused() -> None:
    with pytest.raises(LimitExceeded, match="more than 10 values"):
        check_variables({f"v{i}": 1 for i in range(11)}, SETTINGS)


@pytest.mark.parametrize(
    ("variables", "where"),
    [
        ({"h": "a\ud800"}, "variable $h"),
        ({"input": {"tags": ["ok", "\udfff"]}}, "variable $input.tags[1]"),
        ({"input": {"\ud800": "x"}}, "a key in variable $input"),
        ({"\ud800": "x"}, "a variable's name"),
    ],
    ids=["a value", "deep in a list", "an object key", "a variable name"],
)
def test_an_unpaired_surrogate_is_a_bad_request(variables: dict[str, Any], where: str) -> None:
    with pytest.raises(BadRequest) as raised:
        check_variables(variables, GatewaySettings())
    assert (
        raised.value.message == f"{where} contains an unpaired surrogate, which is not Unicode text"
    )
