import pytest

from reid_stream.api.params import ParamError, parse_list_params


def test_defaults():
    assert parse_list_params({}) == {"entity_type": None, "camera_id": None, "since": None, "limit": 50, "offset": 0}


def test_values():
    p = parse_list_params({"entity_type": "vehicle", "camera_id": "c1", "since": "2026-01-01T00:00:00+00:00",
                           "limit": "1000", "offset": "20"})
    assert p["entity_type"] == "vehicle" and p["limit"] == 1000 and p["offset"] == 20 and p["since"] == 1767225600.0


@pytest.mark.parametrize(("query", "param"), [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"offset": "-1"}, "offset"), ({"entity_type": "cat"}, "entity_type"),
    ({"since": "yesterday"}, "since"), ({"since": "2026-01-01T00:00:00"}, "since"),
])
def test_bad_parameters_are_named(query, param):
    with pytest.raises(ParamError) as err:
        parse_list_params(query)
    assert err.value.param == param
