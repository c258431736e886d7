"""Time-window partitions: round trips, DST, leap days, sizes, refusals.

The oracles here do not reuse the implementation's arithmetic: day windows are checked
against "the first instant of the local date", hour windows against a scan of absolute time
for local tops of the hour.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions import POST_DST_SUFFIX, parse_definition

UTC = timezone.utc
ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Havana", "Asia/Kolkata"]
WHOLE_HOUR_ZONES = ["UTC", "America/New_York", "Europe/London", "America/Havana"]


def define(kind: str, start: str, zone: str = "UTC", **extra: object):
    return parse_definition("t", {"kind": kind, "start": start, "timezone": zone, **extra})


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- round trips -------------------------------------------------------------------------------

definitions = st.builds(
    lambda kind, zone, day, offset: define(
        kind, day.isoformat(), zone,
        **({"day_offset": offset % 7} if kind == "weekly" else {}),
        **({"day_offset": offset % 28 + 1} if kind == "monthly" else {}),
    ),
    st.sampled_from(["hourly", "daily", "weekly", "monthly"]),
    st.sampled_from(ZONES),
    st.dates(min_value=date(1975, 1, 1), max_value=date(2040, 12, 31)),
    st.integers(0, 100),
)
MAX_INDEX = {"hourly": 300_000, "daily": 20_000, "weekly": 3_000, "monthly": 700}


@settings(max_examples=200, deadline=None)
@given(definitions, st.data())
def test_index_of_key_is_the_identity(defn, data) -> None:
    i = data.draw(st.integers(0, MAX_INDEX[defn.kind]))
    key = defn.key(i)
    assert defn.index(key) == i
    assert defn.key(defn.index(key)) == key


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2035, 1, 1)),
    st.booleans(),
    st.sampled_from(["%Y-%m-%d-%H:%M", "%Y-%m-%d-%H:30"]),
)
def test_every_hourly_key_candidate_is_refused_or_round_trips(zone, local, post, pattern) -> None:
    """key(index(k)) == k for every string k the definition accepts, including wall times
    skipped or repeated by DST and misplaced suffixes."""
    defn = define("hourly", "1989-12-31", zone)
    candidate = local.strftime(pattern) + (POST_DST_SUFFIX if post else "")
    try:
        i = defn.index(candidate)
    except ArcodError as err:
        assert err.code == PARTITION_ERROR
        assert "expected" in err.message
        return
    assert defn.key(i) == candidate


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ZONES), st.dates(min_value=date(1990, 1, 1), max_value=date(2035, 1, 1)),
       st.sampled_from(["daily", "weekly", "monthly"]))
def test_every_date_key_candidate_is_refused_or_round_trips(zone, day, kind) -> None:
    defn = define(kind, "1989-12-31", zone)
    for candidate in (day.isoformat(), f"{day.year}-{day.month}-{day.day}", day.strftime("%Y%m%d")):
        try:
            i = defn.index(candidate)
        except ArcodError as err:
            assert err.code == PARTITION_ERROR
            continue
        assert defn.key(i) == candidate


# -- windows against independent oracles -----------------------------------------------------------


def first_instant_of(day: date, tz: ZoneInfo) -> datetime:
    """Scan minutes around local midnight for the first instant whose local date is `day`."""
    guess = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC) - timedelta(hours=3)
    for minute in range(0, 6 * 60):
        moment = guess + timedelta(minutes=minute)
        if moment.astimezone(tz).date() == day:
            return moment
    raise AssertionError("no instant found")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ZONES), st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31)))
def test_daily_windows_run_from_local_day_start_to_the_next(zone, day) -> None:
    tz = ZoneInfo(zone)
    defn = define("daily", "1999-01-01", zone)
    begin, end = defn.window(day.isoformat())
    assert begin.astimezone(UTC) == first_instant_of(day, tz)
    assert end.astimezone(UTC) == first_instant_of(day + timedelta(days=1), tz)
    assert begin.tzinfo == tz and end.tzinfo == tz


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/New_York", "2024-03-10", 23),
        ("America/New_York", "2024-11-03", 25),
        ("Europe/London", "2024-03-31", 23),
        ("Europe/London", "2024-10-27", 25),
        ("Australia/Lord_Howe", "2024-04-07", 24.5),
        ("Australia/Lord_Howe", "2024-10-06", 23.5),
        ("America/Havana", "2024-03-10", 23),  # local midnight does not exist that day
        ("America/Havana", "2024-11-03", 25),  # local midnight happens twice that day
        ("UTC", "2024-03-10", 24),
    ],
)
def test_daily_windows_on_dst_days_are_as_long_as_the_day(zone, day, hours) -> None:
    begin, end = define("daily", "2024-01-01", zone).window(day)
    assert end.timestamp() - begin.timestamp() == hours * 3600


def test_a_day_without_local_midnight_starts_at_its_first_instant() -> None:
    begin, _ = define("daily", "2024-01-01", "America/Havana").window("2024-03-10")
    assert (begin.hour, begin.minute) == (1, 0)
    assert begin.isoformat() == "2024-03-10T01:00:00-04:00"


@pytest.mark.parametrize("zone", WHOLE_HOUR_ZONES)
@pytest.mark.parametrize("around", ["2024-03-10", "2024-03-31", "2024-11-03", "2024-10-27"])
def test_hourly_windows_are_exactly_the_local_tops_of_the_hour(zone, around) -> None:
    """In whole-hour zones every window starts at a local :00 and every local :00 starts one."""
    tz = ZoneInfo(zone)
    defn = define("hourly", "2024-01-01", zone)
    scan_from = datetime.fromisoformat(around).replace(tzinfo=UTC) - timedelta(days=1)
    tops = [
        scan_from + timedelta(minutes=15 * q)
        for q in range(3 * 24 * 4)
        if (scan_from + timedelta(minutes=15 * q)).astimezone(tz).minute == 0
    ]
    first = defn.index(_key_of(tops[0], tz))
    keys = defn.key_range(first, first + len(tops))
    assert len(set(keys)) == len(keys)
    for key, top in zip(keys, tops):
        begin, end = defn.window(key)
        assert begin.astimezone(UTC) == top
        assert end.timestamp() - begin.timestamp() == 3600


def _key_of(moment: datetime, tz: ZoneInfo) -> str:
    local = moment.astimezone(tz)
    return local.strftime("%Y-%m-%d-%H:%M") + (POST_DST_SUFFIX if local.fold else "")


def test_new_york_fall_back_names_the_repeated_hour_like_dagster() -> None:
    defn = define("hourly", "2024-11-03", "America/New_York")
    assert defn.key_range(0, 4) == [
        "2024-11-03-00:00",
        "2024-11-03-01:00",
        "2024-11-03-01:00" + POST_DST_SUFFIX,
        "2024-11-03-02:00",
    ]
    first, second = defn.window("2024-11-03-01:00"), defn.window("2024-11-03-01:00" + POST_DST_SUFFIX)
    assert first[0].isoformat() == "2024-11-03T01:00:00-04:00"
    assert second[0].isoformat() == "2024-11-03T01:00:00-05:00"
    assert first[1] == second[0]


def test_new_york_spring_forward_skips_the_missing_hour() -> None:
    defn = define("hourly", "2024-03-10", "America/New_York")
    assert defn.key_range(0, 3) == ["2024-03-10-00:00", "2024-03-10-01:00", "2024-03-10-03:00"]
    with pytest.raises(ArcodError, match="does not exist in America/New_York"):
        defn.index("2024-03-10-02:00")


def test_suffix_on_an_hour_that_is_not_repeated_is_refused() -> None:
    defn = define("hourly", "2024-01-01", "America/New_York")
    with pytest.raises(ArcodError, match="second pass"):
        defn.index("2024-01-05-01:00" + POST_DST_SUFFIX)


def test_lord_howe_half_hour_shift_keeps_keys_unique_and_hours_whole() -> None:
    """Lord Howe moves its clocks by 30 minutes: keys follow the local minute of each hour."""
    defn = define("hourly", "2024-04-06", "Australia/Lord_Howe")  # fall back on 2024-04-07
    keys = defn.key_range(0, 72)
    assert len(set(keys)) == 72
    assert all(defn.index(k) == i for i, k in enumerate(keys))
    assert keys[0] == "2024-04-06-00:00"
    assert "2024-04-07-01:00" in keys and "2024-04-07-02:30" in keys
    assert keys[-1].endswith(":30")  # after the shift the hours start at local :30
    for k in keys:
        begin, end = defn.window(k)
        assert end.timestamp() - begin.timestamp() == 3600
    with pytest.raises(ArcodError, match="minute 30"):
        defn.index("2024-04-08-05:00")


# -- alignment, leap days, cadence details ------------------------------------------------------------


def test_leap_days_are_daily_partitions_and_non_dates_are_refused() -> None:
    defn = define("daily", "2023-01-01")
    assert defn.key(defn.index("2024-02-29")) == "2024-02-29"
    assert defn.index("2024-03-01") == defn.index("2024-02-29") + 1
    assert defn.index("2023-03-01") == defn.index("2023-02-28") + 1
    with pytest.raises(ArcodError, match="expected a daily key like '2023-01-01'"):
        defn.index("2023-02-29")


def test_weekly_windows_start_on_sunday_by_default_like_dagster() -> None:
    defn = define("weekly", "2024-01-01")  # a Monday
    assert defn.first_key() == "2024-01-07"
    begin, end = defn.window("2024-01-07")
    assert begin.weekday() == 6 and (end - begin).days == 7
    with pytest.raises(ArcodError, match="weekly windows start on Sunday"):
        defn.index("2024-01-08")


def test_weekly_day_offset_picks_the_weekday() -> None:
    defn = define("weekly", "2024-01-01", day_offset=1)  # Monday
    assert defn.first_key() == "2024-01-01"
    assert defn.key(8) == "2024-02-26"
    assert defn.key(9) == "2024-03-04"  # across the leap day


def test_monthly_windows_and_day_offset() -> None:
    defn = define("monthly", "2024-01-15")
    assert defn.first_key() == "2024-02-01"
    assert defn.key(11) == "2025-01-01"
    offset = define("monthly", "2024-01-15", day_offset=28)
    assert offset.first_key() == "2024-01-28"
    assert offset.window("2024-02-28")[1].date() == date(2024, 3, 28)
    with pytest.raises(ArcodError, match="day 28 of the month"):
        offset.index("2024-02-29")


def test_start_inside_a_window_begins_at_the_next_one() -> None:
    assert define("daily", "2024-01-01T05:00").first_key() == "2024-01-02"
    assert define("hourly", "2024-01-01T05:20").first_key() == "2024-01-01-06:00"
    assert define("hourly", "2024-01-01T05:00:00+00:00", "America/New_York").first_key() == "2024-01-01-00:00"


def test_keys_before_the_first_window_are_refused() -> None:
    defn = define("daily", "2024-01-01")
    with pytest.raises(ArcodError, match="before the first partition '2024-01-01'"):
        defn.index("2023-12-31")
    with pytest.raises(ArcodError) as info:
        defn.key(-1)
    assert info.value.code == PARTITION_ERROR


def test_custom_fmt_round_trips() -> None:
    defn = define("daily", "2024-01-01", fmt="%Y%m%d")
    assert defn.key(40) == "20240210"
    assert defn.index("20240210") == 40
    with pytest.raises(ArcodError, match="format '%Y%m%d'"):
        defn.index("2024-02-10")


# -- size, as_of, end, end_offset -------------------------------------------------------------------


def test_end_is_exclusive_and_as_of_is_ignored_with_an_end() -> None:
    defn = parse_definition("d", {"kind": "daily", "start": "2024-01-01", "end": "2025-01-01"})
    assert defn.size() == 366
    assert defn.size(at(2024, 3, 1)) == 366
    assert defn.key(365) == "2024-12-31"
    with pytest.raises(ArcodError, match="after the last partition"):
        defn.index("2025-01-01")


def test_open_ended_size_counts_complete_windows_as_of() -> None:
    defn = define("daily", "2024-01-01")
    assert defn.size(at(2024, 1, 1)) == 0
    assert defn.size(at(2024, 1, 1, 23, 59, 59)) == 0
    assert defn.size(at(2024, 1, 2)) == 1
    assert defn.size(at(2024, 3, 1, 12)) == 60
    with pytest.raises(ValueError, match="as_of"):
        defn.size()
    with pytest.raises(ValueError, match="timezone-aware"):
        defn.size(datetime(2024, 3, 1))


def test_open_ended_keys_past_as_of_are_refused_only_when_as_of_is_given() -> None:
    defn = define("hourly", "2024-01-01")
    as_of = at(2024, 1, 1, 10, 30)
    assert defn.size(as_of) == 10
    assert defn.index("2024-01-01-09:00", as_of) == 9
    with pytest.raises(ArcodError, match="after the last partition as of"):
        defn.index("2024-01-01-10:00", as_of)
    assert defn.index("2030-01-01-10:00") > 0
    with pytest.raises(ArcodError, match="out of range"):
        defn.key(10, as_of)


def test_end_offset_extends_or_trims_like_dagster() -> None:
    as_of = at(2024, 1, 11)
    assert define("daily", "2024-01-01", end_offset=1).size(as_of) == 11
    assert define("daily", "2024-01-01", end_offset=-3).size(as_of) == 7
    assert define("daily", "2024-01-01", end_offset=-30).size(as_of) == 0


def test_size_in_a_dst_zone_counts_local_days() -> None:
    defn = define("daily", "2024-03-09", "America/New_York")
    # 2024-03-11 00:00 EDT is 04:00 UTC: the 10th (23 hours long) is complete then, not before.
    assert defn.size(at(2024, 3, 11, 3, 59)) == 1
    assert defn.size(at(2024, 3, 11, 4, 0)) == 2


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ZONES), st.sampled_from(["hourly", "daily", "weekly", "monthly"]),
       st.integers(0, 2_000_000))
def test_size_matches_the_windows_that_have_ended(zone, kind, minutes) -> None:
    defn = define(kind, "2024-01-01", zone)
    as_of = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    n = defn.size(as_of)
    assume(n < 40_000)
    if n:
        assert defn.window(defn.key(n - 1))[1] <= as_of
    assert defn.window(defn.key(n))[1] > as_of  # the next window has not ended yet


def test_huge_indexes_past_year_9999_are_refused_cleanly() -> None:
    defn = define("daily", "2024-01-01")
    with pytest.raises(ArcodError) as info:
        defn.key(10**9)
    assert info.value.code == PARTITION_ERROR


def test_end_offset_before_the_first_window_counts_from_the_start() -> None:
    defn = define("daily", "2024-01-10", end_offset=2)
    assert defn.size(at(2024, 1, 1)) == 2  # like Dagster: the first end_offset windows exist
    assert defn.key(1, at(2024, 1, 1)) == "2024-01-11"
