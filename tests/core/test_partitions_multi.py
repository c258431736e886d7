"""Multi partitions: two dimensions ordered by name, keys `v1|v2`, row-major positions."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions import AnyPartitionsDefinition, parse_definitions

UTC = timezone.utc


def multi(**dims):
    return parse_definitions({"m": {"kind": "multi", "dimensions": dims}})["m"]


REGION = {"kind": "static", "keys": ["eu", "us", "apac"]}
DAYS = {"kind": "daily", "start": "2024-01-01", "end": "2024-01-05"}


def test_dimensions_are_ordered_by_name_and_keys_are_row_major() -> None:
    defn = multi(region=REGION, date=DAYS)
    assert defn.dimension_names == ("date", "region")
    assert defn.size() == 12
    assert defn.key_range(0, 4) == ["2024-01-01|eu", "2024-01-01|us", "2024-01-01|apac", "2024-01-02|eu"]
    assert defn.index("2024-01-04|apac") == 11


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_index_and_key_are_inverse(data) -> None:
    n_keys = data.draw(st.integers(1, 5))
    days = data.draw(st.integers(1, 40))
    zone = data.draw(st.sampled_from(["UTC", "America/New_York", "Australia/Lord_Howe"]))
    kind = data.draw(st.sampled_from(["hourly", "daily"]))
    defn = multi(
        a={"kind": "static", "keys": [f"k{i}" for i in range(n_keys)]},
        b={"kind": kind, "start": "2024-03-01", "end": f"2024-{3 + days // 30:02d}-{days % 30 + 1:02d}",
           "timezone": zone},
    )
    i = data.draw(st.integers(0, defn.size() - 1))
    key = defn.key(i)
    assert defn.index(key) == i
    assert defn.key(defn.index(key)) == key


def test_open_ended_inner_dimension_needs_as_of() -> None:
    defn = multi(region=REGION, zz={"kind": "daily", "start": "2024-01-01"})
    as_of = datetime(2024, 1, 11, tzinfo=UTC)
    assert defn.size(as_of) == 30
    assert defn.index("us|2024-01-03", as_of) == 12
    assert defn.key(12, as_of) == "us|2024-01-03"
    with pytest.raises(ValueError, match="as_of"):
        defn.index("us|2024-01-03")
    assert defn.open_ended


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("eu", "expected 'date|region'"),
        ("eu|2024-01-01", "in dimension 'date'"),
        ("2024-01-01|asia", "in dimension 'region'"),
        ("2024-01-01|eu|x", "like '2024-01-01|eu'"),
    ],
)
def test_malformed_multi_keys_name_the_expected_form(key, fragment) -> None:
    defn = multi(region=REGION, date=DAYS)
    with pytest.raises(ArcodError) as info:
        defn.index(key)
    assert info.value.code == PARTITION_ERROR
    assert fragment in info.value.message


def test_multi_round_trips_through_msgspec() -> None:
    defn = multi(region=REGION, date=DAYS)
    back = msgspec.json.decode(msgspec.json.encode(defn), type=AnyPartitionsDefinition)
    assert back.key_range(0, 12) == defn.key_range(0, 12)
