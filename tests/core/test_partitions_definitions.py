"""Parsing `[partitions.NAME]` tables: defaults, and refusals that say what was expected."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timezone

import pytest

from arcod.core.errors import DEFINITIONS_ERROR, ArcodError
from arcod.core.partitions import (
    DailyPartitions,
    DynamicPartitions,
    HourlyPartitions,
    MultiPartitions,
    StaticPartitions,
    WeeklyPartitions,
    parse_definition,
    parse_definitions,
)

SPEC_EXAMPLE = """
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2025-01-01"
timezone = "UTC"

[partitions.region]
kind = "static"
keys = ["eu", "us", "apac"]

[partitions.customers]
kind = "dynamic"

[partitions.region_daily]
kind = "multi"
dimensions = { region = "region", date = "daily" }

[partitions.hourly_ny]
kind = "hourly"
start = 2024-01-01T00:00:00
timezone = "America/New_York"
end_offset = 1

[partitions.weekly]
kind = "weekly"
start = 2024-01-01
day_offset = 1

[partitions.inline]
kind = "multi"
dimensions = { color = { kind = "static", keys = ["red", "blue"] }, month = { kind = "monthly", start = "2024-01-01", end = "2025-01-01" } }
"""


def test_the_spec_example_parses() -> None:
    defs = parse_definitions(tomllib.loads(SPEC_EXAMPLE)["partitions"])
    assert list(defs) == ["daily", "region", "customers", "region_daily", "hourly_ny", "weekly", "inline"]
    assert isinstance(defs["daily"], DailyPartitions) and defs["daily"].size() == 366
    assert isinstance(defs["region"], StaticPartitions)
    assert isinstance(defs["customers"], DynamicPartitions)
    assert isinstance(defs["region_daily"], MultiPartitions) and defs["region_daily"].size() == 3 * 366
    hourly = defs["hourly_ny"]
    assert isinstance(hourly, HourlyPartitions)
    assert hourly.first_key() == "2024-01-01-00:00"
    assert hourly.window("2024-01-01-00:00")[0].isoformat() == "2024-01-01T00:00:00-05:00"
    assert hourly.size(datetime(2024, 1, 1, 6, 30, tzinfo=timezone.utc)) == 2  # 1 complete + offset
    assert isinstance(defs["weekly"], WeeklyPartitions) and defs["weekly"].first_key() == "2024-01-01"
    assert defs["inline"].key(0) == "red|2024-01-01"
    assert defs["inline"].dims[0][1].name == "inline.color"


def test_kind_is_reported_and_defaults_follow_dagster() -> None:
    daily = parse_definition("d", {"kind": "daily", "start": date(2024, 1, 1)})
    assert daily.kind == "daily" and daily.timezone == "UTC" and daily.fmt == "%Y-%m-%d"
    hourly = parse_definition("h", {"kind": "hourly", "start": "2024-01-01"})
    assert hourly.fmt == "%Y-%m-%d-%H:%M"
    assert parse_definition("w", {"kind": "weekly", "start": "2024-01-01"}).day_offset == 0
    assert parse_definition("m", {"kind": "monthly", "start": "2024-01-01"}).day_offset == 1


def test_start_with_an_offset_is_an_instant() -> None:
    defn = parse_definition("h", {"kind": "hourly", "start": "2024-01-01T05:00:00Z", "timezone": "Europe/Paris"})
    assert defn.first_key() == "2024-01-01-06:00"


def refusal(name: str, table: dict, known=None) -> ArcodError:
    with pytest.raises(ArcodError) as info:
        parse_definition(name, table, known)
    assert info.value.code == DEFINITIONS_ERROR
    assert info.value.details["partitions"] == name
    return info.value


def test_unknown_kind_lists_the_valid_kinds() -> None:
    err = refusal("x", {"kind": "dayly", "start": "2024-01-01"})
    assert "did you mean 'daily'?" in err.message
    assert "hourly, daily, weekly, monthly, static, dynamic, multi" in err.message
    assert "missing `kind`" in refusal("x", {"start": "2024-01-01"}).message


def test_unknown_field_suggests_the_nearest_name() -> None:
    err = refusal("x", {"kind": "daily", "start": "2024-01-01", "timzone": "UTC"})
    assert "unknown field 'timzone'" in err.message and "did you mean 'timezone'?" in err.message
    assert err.details["field"] == "timzone"
    err = refusal("x", {"kind": "static", "keys": ["a"], "start": "2024-01-01"})
    assert "allowed fields: keys, kind" in err.message
    err = refusal("x", {"kind": "daily", "start": "2024-01-01", "day_offset": 1})
    assert "unknown field 'day_offset' for kind 'daily'" in err.message


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"kind": "daily"}, "missing `start`"),
        ({"kind": "daily", "start": "yesterday"}, "like '2024-01-01'"),
        ({"kind": "daily", "start": 20240101}, "like '2024-01-01'"),
        ({"kind": "daily", "start": "0999-01-01"}, "year 1000 or later"),
        ({"kind": "daily", "start": "2024-01-01", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"kind": "daily", "start": "2024-01-01", "timezone": "../etc/passwd"}, "unknown timezone"),
        ({"kind": "daily", "start": "2024-01-01", "end": "2024-01-01"}, "no complete window"),
        ({"kind": "daily", "start": "2024-01-02", "end": "2024-01-01"}, "move `end` later"),
        ({"kind": "daily", "start": "2024-01-01", "end": "2025-01-01", "end_offset": 1}, "remove one of them"),
        ({"kind": "daily", "start": "2024-01-01", "end_offset": "1"}, "`end_offset` must be an integer"),
        ({"kind": "daily", "start": "2024-01-01", "fmt": "%Y-%m"}, "does not name daily windows uniquely"),
        ({"kind": "hourly", "start": "2024-01-01", "fmt": "%Y-%m-%d-%H"}, "hour and minute"),
        ({"kind": "daily", "start": "2024-01-01", "fmt": "%Y,%m,%d"}, "makes keys like"),
        ({"kind": "daily", "start": "2024-01-01", "fmt": "%y-%m-%d"}, "4-digit year"),
        ({"kind": "weekly", "start": "2024-01-01", "day_offset": 7}, "0 (Sunday) to 6 (Saturday)"),
        ({"kind": "monthly", "start": "2024-01-01", "day_offset": 31}, "1 to 28"),
        ({"kind": "static", "keys": []}, "non-empty list"),
        ({"kind": "static", "keys": ["a", "b", "a"]}, "repeated: 'a'"),
        ({"kind": "static", "keys": ["a|b"]}, "'|'"),
        ({"kind": "static", "keys": ["all"]}, "reserved"),
        ({"kind": "multi", "dimensions": {"a": {"kind": "static", "keys": ["x"]}}}, "exactly two dimensions"),
        ({"kind": "multi", "dimensions": {"a": "nope", "b": "nope"}}, "unknown partitions 'nope'"),
        ({"kind": "multi", "dimensions": {"a-b": {"kind": "static", "keys": ["x"]}, "c": {"kind": "static", "keys": ["y"]}}}, "dimension name 'a-b'"),
        ({"kind": "multi", "dimensions": {"a": {"kind": "dynamic"}, "c": {"kind": "static", "keys": ["y"]}}}, "declare a dynamic definition on its own"),
    ],
)
def test_refusals_say_what_was_expected(table, fragment) -> None:
    assert fragment in refusal("p", table).message


def test_multi_may_not_nest_multi() -> None:
    known = parse_definitions({
        "a": {"kind": "static", "keys": ["x"]},
        "b": {"kind": "static", "keys": ["y"]},
        "ab": {"kind": "multi", "dimensions": {"a": "a", "b": "b"}},
    })
    err = refusal("abc", {"kind": "multi", "dimensions": {"ab": "ab", "a": "a"}}, known)
    assert "is itself multi" in err.message


def test_bad_names_and_tables_are_refused() -> None:
    with pytest.raises(ArcodError, match="partitions name"):
        parse_definition("bad name", {"kind": "dynamic"})
    with pytest.raises(ArcodError, match="expected a table"):
        parse_definition("p", ["daily"])  # type: ignore[arg-type]
    with pytest.raises(ArcodError, match=r"\[partitions\] must be a table"):
        parse_definitions(["daily"])  # type: ignore[arg-type]


def test_multi_naming_another_multi_in_the_same_file_is_refused() -> None:
    with pytest.raises(ArcodError, match="which is itself multi"):
        parse_definitions({
            "a": {"kind": "static", "keys": ["x"]},
            "ab": {"kind": "multi", "dimensions": {"a": "a", "b": "abc"}},
            "abc": {"kind": "multi", "dimensions": {"a": "a", "b": "a"}},
        })


def test_every_kind_satisfies_the_protocol() -> None:
    from arcod.core.partitions import PartitionsDefinition

    defs = parse_definitions(tomllib.loads(SPEC_EXAMPLE)["partitions"])
    for defn in defs.values():
        assert isinstance(defn, PartitionsDefinition)
        assert defn.kind in ("hourly", "daily", "weekly", "monthly", "static", "dynamic", "multi")
        assert isinstance(defn.open_ended, bool)
