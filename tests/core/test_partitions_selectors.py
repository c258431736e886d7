"""Partition selectors: canonical forms, counts and pages checked against brute force.

The brute-force oracle expands a small definition key by key and filters it with the
selector's meaning written out directly (positions for ranges, membership for key lists,
per-value membership for products); the code under test never expands anything.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions import (
    AllSelector,
    KeysSelector,
    MultiPartitions,
    MultiSelector,
    RangeSelector,
    format_selector,
    parse_definitions,
    parse_selector,
    pin_as_of,
    selector_contains,
    selector_count,
    selector_from_dict,
    selector_slice,
    selector_to_dict,
    validate_selector,
    with_dynamic_keys,
)

UTC = timezone.utc


def small_definitions(draw_zone: str = "UTC") -> dict:
    return parse_definitions({
        "region": {"kind": "static", "keys": ["eu", "us", "apac", "latam", "mena"]},
        "daily": {"kind": "daily", "start": "2024-02-26", "end": "2024-03-05"},
        "hourly": {"kind": "hourly", "start": "2024-11-02T22:00", "end": "2024-11-03T06:00",
                   "timezone": draw_zone},
        "weekly": {"kind": "weekly", "start": "2024-01-01", "end": "2024-03-01"},
        "color_day": {"kind": "multi", "dimensions": {"region": "region", "date": "daily"}},
        "hour_region": {"kind": "multi", "dimensions": {"a_hour": "hourly", "region": "region"}},
    })


DEFS = small_definitions("America/New_York")


def expand(defn) -> list[str]:
    return [defn.key(i) for i in range(defn.size())]


def dimension_selectors(defn, draw):
    keys = expand(defn)
    choice = draw(st.sampled_from(["all", "range", "keys"]))
    if choice == "all":
        return AllSelector()
    if choice == "range":
        i = draw(st.integers(0, len(keys) - 1))
        j = draw(st.integers(i, len(keys) - 1))
        return RangeSelector(start=keys[i], end=keys[j])
    picked = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys) + 2))
    return KeysSelector(keys=tuple(picked))


@st.composite
def cases(draw):
    defn = DEFS[draw(st.sampled_from(sorted(DEFS)))]
    if isinstance(defn, MultiPartitions) and draw(st.booleans()):
        dims = {name: dimension_selectors(d, draw) for name, d in defn.dims if draw(st.booleans())}
        selector = MultiSelector(dims=dims)
    elif isinstance(defn, MultiPartitions) and draw(st.booleans()):
        # ranges over whole multi keys are within one row when the inner dimension could grow;
        # these dimensions are bounded, so any forward range is allowed
        selector = dimension_selectors(defn, draw)
    else:
        selector = dimension_selectors(defn, draw)
    return defn, selector


def brute_force(selector, defn) -> list[str]:
    everything = expand(defn)
    if isinstance(selector, AllSelector):
        return everything
    if isinstance(selector, RangeSelector):
        i, j = everything.index(selector.start), everything.index(selector.end)
        return everything[i : j + 1]
    if isinstance(selector, KeysSelector):
        return [k for k in everything if k in set(selector.keys)]
    chosen = {
        name: set(brute_force(selector.dims.get(name, AllSelector()), d)) for name, d in defn.dims
    }
    (outer, _), (inner, _) = defn.dims
    return [k for k in everything if k.split("|")[0] in chosen[outer] and k.split("|")[1] in chosen[inner]]


@settings(max_examples=200, deadline=None)
@given(cases(), st.integers(1, 7))
def test_count_and_pages_match_brute_force_expansion(case, page) -> None:
    defn, raw = case
    selector = validate_selector(raw, defn)
    expected = brute_force(raw, defn)
    assert selector_count(selector, defn) == len(expected)
    pages = [selector_slice(selector, defn, offset, page) for offset in range(0, len(expected) + page, page)]
    assert [k for p in pages for k in p] == expected
    assert all(len(p) <= page for p in pages)
    newest_first = [k for o in range(0, len(expected), page) for k in selector_slice(selector, defn, o, page, descending=True)]
    assert newest_first == expected[::-1]
    for key in expand(defn):
        assert selector_contains(selector, defn, key) == (key in expected)


@settings(max_examples=150, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_canonical_form_is_idempotent_order_insensitive_and_round_trips(case, rnd) -> None:
    defn, raw = case
    canonical = validate_selector(raw, defn)
    assert validate_selector(canonical, defn) == canonical
    if isinstance(raw, KeysSelector):
        shuffled = list(raw.keys) * 2
        rnd.shuffle(shuffled)
        assert validate_selector(KeysSelector(keys=tuple(shuffled)), defn) == canonical
        assert len(set(canonical.keys)) == len(canonical.keys)
    assert parse_selector(format_selector(canonical), defn) == canonical
    assert selector_from_dict(selector_to_dict(canonical)) == canonical


def test_cli_syntax() -> None:
    daily, multi = DEFS["daily"], DEFS["color_day"]
    assert parse_selector("all", daily) == AllSelector()
    assert parse_selector(" 2024-02-27 .. 2024-03-01 ", daily) == RangeSelector(start="2024-02-27", end="2024-03-01")
    assert parse_selector("2024-03-01,2024-02-27,2024-03-01", daily) == KeysSelector(keys=("2024-02-27", "2024-03-01"))
    assert parse_selector("2024-02-29", daily) == KeysSelector(keys=("2024-02-29",))
    assert parse_selector("region=us,eu;date=2024-02-27..2024-02-28", multi) == MultiSelector(
        dims={"date": RangeSelector(start="2024-02-27", end="2024-02-28"), "region": KeysSelector(keys=("eu", "us"))}
    )
    assert parse_selector("region=eu", multi) == MultiSelector(
        dims={"date": AllSelector(), "region": KeysSelector(keys=("eu",))}
    )
    assert parse_selector("region=all;date=all", multi) == AllSelector()
    assert parse_selector("2024-02-27|us,2024-02-26|mena", multi) == KeysSelector(
        keys=("2024-02-26|mena", "2024-02-27|us")
    )


@pytest.mark.parametrize(
    ("defn_name", "text", "fragment"),
    [
        ("daily", "", "empty partition selection; expected 'all'"),
        ("daily", "2024-13-01", "expected a daily key like '2024-02-26'"),
        ("daily", "2024-03-01..2024-02-27", "runs backwards"),
        ("daily", "2024-02-27..", "with a key on each side"),
        ("daily", "2024-02-27..2024-02-28..2024-03-01", "not a range"),
        ("daily", "2024-02-27..2024-02-28,2024-03-01", "mixes a range and a list"),
        ("daily", "2024-02-27,,2024-02-28", "empty item"),
        ("daily", "2024-03-05", "after the last partition"),
        ("daily", "region=eu", "not a partition of daily"),
        ("region", "eu|us", "not a partition of static"),
        ("region", "e\tu", "not a partition of static"),
        ("color_day", "reigon=eu", "unknown dimension 'reigon' (did you mean 'region'?)"),
        ("color_day", "region=eu;region=us", "selected twice"),
        ("color_day", "region=eu;date", "expected 'NAME=SELECTION'"),
        ("color_day", "region=asia", "in dimension 'region'"),
        ("color_day", "date=2024-03-01..2024-02-27", "runs backwards"),
        ("color_day", "eu|2024-02-26", "in dimension 'date'"),
        ("color_day", "2024-02-27|us..2024-02-26|us", "runs backwards"),
    ],
)
def test_malformed_selections_are_refused_with_the_expected_form(defn_name, text, fragment) -> None:
    with pytest.raises(ArcodError) as info:
        parse_selector(text, DEFS[defn_name])
    assert info.value.code == PARTITION_ERROR
    assert fragment in info.value.message
    assert info.value.details["partitions"] == defn_name


def test_multi_selector_on_a_plain_definition_is_refused() -> None:
    with pytest.raises(ArcodError, match="not multi"):
        validate_selector(MultiSelector(dims={"a": AllSelector()}), DEFS["daily"])
    with pytest.raises(ArcodError, match="at least one key"):
        validate_selector(KeysSelector(keys=()), DEFS["daily"])
    with pytest.raises(ArcodError, match="not a partition selector"):
        selector_from_dict({"kind": "ranges", "start": "a"})
    with pytest.raises(ArcodError, match="not a partition selector"):
        selector_from_dict({"kind": "multi", "dims": {"a": {"kind": "multi", "dims": {}}}})


# -- open-ended definitions and pinning --------------------------------------------------------------

OPEN = parse_definitions({
    "hours": {"kind": "hourly", "start": "2024-01-01"},
    "region": {"kind": "static", "keys": ["eu", "us"]},
    "by_region": {"kind": "multi", "dimensions": {"region": "region", "when": "hours"}},
    "customers": {"kind": "dynamic"},
})


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 10_000))
def test_pinning_freezes_the_selection_of_an_open_ended_definition(hours, later) -> None:
    defn = OPEN["hours"]
    as_of = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=hours, minutes=7)
    pinned = pin_as_of(AllSelector(), defn, as_of)
    assert isinstance(pinned, RangeSelector)
    assert selector_count(pinned, defn) == hours == selector_count(AllSelector(), defn, as_of)
    much_later = as_of + timedelta(hours=later)
    assert selector_count(pinned, defn, much_later) == hours
    assert selector_slice(pinned, defn, hours - 1, 5, much_later) == [defn.key(hours - 1)]


def test_pinning_a_multi_pins_only_the_growing_dimension() -> None:
    defn = OPEN["by_region"]
    as_of = datetime(2024, 1, 1, 3, tzinfo=UTC)
    pinned = pin_as_of(AllSelector(), defn, as_of)
    assert pinned == MultiSelector(dims={
        "region": AllSelector(),
        "when": RangeSelector(start="2024-01-01-00:00", end="2024-01-01-02:00"),
    })
    later = as_of + timedelta(days=30)
    assert selector_count(pinned, defn) == 6 == selector_count(pinned, defn, later)
    assert selector_slice(pinned, defn, 2, 3) == ["eu|2024-01-01-02:00", "us|2024-01-01-00:00", "us|2024-01-01-01:00"]
    keys = parse_selector("eu|2024-01-01-01:00,us|2024-01-01-00:00", defn, as_of)
    assert pin_as_of(keys, defn, as_of) == keys


def test_ranges_across_rows_of_a_growing_inner_dimension_are_refused() -> None:
    defn = OPEN["by_region"]
    as_of = datetime(2024, 1, 2, tzinfo=UTC)
    with pytest.raises(ArcodError, match="would grow"):
        parse_selector("eu|2024-01-01-05:00..us|2024-01-01-01:00", defn, as_of)
    same_row = parse_selector("eu|2024-01-01-05:00..eu|2024-01-01-09:00", defn, as_of)
    assert selector_count(same_row, defn) == 5
    assert selector_slice(same_row, defn, 3, 10) == ["eu|2024-01-01-08:00", "eu|2024-01-01-09:00"]


def test_pinning_a_dynamic_definition_excludes_keys_added_later() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    before = with_dynamic_keys(OPEN["customers"], ["acme", "zeta"])
    pinned = pin_as_of(AllSelector(), before, now)
    after = with_dynamic_keys(OPEN["customers"], ["acme", "zeta", "newco"])
    assert selector_slice(pinned, after, 0, 10) == ["acme", "zeta"]
    with pytest.raises(ArcodError, match="selects nothing"):
        pin_as_of(AllSelector(), with_dynamic_keys(OPEN["customers"], []), now)


def test_bounded_definitions_are_left_as_given() -> None:
    as_of = datetime(2030, 1, 1, tzinfo=UTC)
    assert pin_as_of(AllSelector(), DEFS["daily"], as_of) == AllSelector()
    assert pin_as_of(AllSelector(), DEFS["color_day"], as_of) == AllSelector()
    with pytest.raises(ValueError):
        pin_as_of(AllSelector(), OPEN["hours"], datetime(2024, 1, 2))


def test_keys_past_as_of_are_refused_when_as_of_is_given() -> None:
    as_of = datetime(2024, 1, 1, 5, 30, tzinfo=UTC)
    with pytest.raises(ArcodError, match="after the last partition as of"):
        parse_selector("2024-01-01-03:00..2024-01-01-05:00", OPEN["hours"], as_of)


def test_slicing_refuses_negative_offsets_and_limits() -> None:
    with pytest.raises(ArcodError, match="offset"):
        selector_slice(AllSelector(), DEFS["daily"], -1, 5)
    with pytest.raises(ArcodError, match="limit"):
        selector_slice(AllSelector(), DEFS["daily"], 0, -5)
    assert selector_slice(AllSelector(), DEFS["daily"], 100, 5) == []


def test_a_million_window_selection_is_counted_and_paged_without_expansion() -> None:
    defs = parse_definitions({"h": {"kind": "hourly", "start": "1990-01-01", "end": "2104-01-31"}})
    defn = defs["h"]
    selector = parse_selector("all", defn)
    total = selector_count(selector, defn)
    assert total > 1_000_000
    middle = selector_slice(selector, defn, total // 2, 3)
    assert [defn.index(k) for k in middle] == [total // 2, total // 2 + 1, total // 2 + 2]
    ranged = parse_selector(f"{defn.key(10)}..{defn.key(total - 11)}", defn)
    assert selector_count(ranged, defn) == total - 20
    assert selector_to_dict(ranged) == {"kind": "range", "start": defn.key(10), "end": defn.key(total - 11)}
