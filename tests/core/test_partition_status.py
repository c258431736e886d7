"""Partition status from history rows: the state rules, and counts, health buckets and pages
checked against a brute-force model that does list every partition (small definitions only)."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core import partition_status as ps
from arcod.core.partition_status import StatusRow
from arcod.core.partitions import MultiPartitions, StaticPartitions, parse_definition

AT = "2024-06-01T00:00:00.000+00:00"


def row(key: str, attempt: str | None, materialized: bool) -> StatusRow:
    return StatusRow(
        partition=key, last_attempt_state=attempt, last_attempt_run="r-2" if attempt else None,
        last_attempt_at=AT if attempt else None, last_materialized_run="r-1" if materialized else None,
        last_materialized_at=AT if materialized else None,
    )


def test_state_rules():
    assert ps.partition_state(None) == ps.MISSING
    assert ps.partition_state(row("a", "SUCCEEDED", True)) == ps.MATERIALIZED
    assert ps.partition_state(row("a", "RUNNING", False)) == ps.IN_PROGRESS
    assert ps.partition_state(row("a", "RUNNING", True)) == ps.IN_PROGRESS
    # The last attempt failed: FAILED, even with an older good materialisation (which the row keeps).
    assert ps.partition_state(row("a", "FAILED", True)) == ps.FAILED
    assert ps.partition_state(row("a", "FAILED", False)) == ps.FAILED
    # A cancel is not a data failure: the materialisation history decides.
    assert ps.partition_state(row("a", "CANCELED", True)) == ps.MATERIALIZED
    assert ps.partition_state(row("a", "CANCELED", False)) == ps.MISSING


KINDS = st.sampled_from([("SUCCEEDED", True), ("FAILED", True), ("FAILED", False), ("RUNNING", False),
                         ("RUNNING", True), ("CANCELED", False), ("CANCELED", True)])


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 150))
    defn = StaticPartitions(name="s", keys=tuple(f"k{i}" for i in range(n)))
    chosen = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    rows = [row(f"k{i}", *draw(KINDS)) for i in chosen]
    rows += [row(f"gone{i}", "SUCCEEDED", True) for i in range(draw(st.integers(0, 3)))]
    return defn, rows, draw(st.permutations(rows))


def model(defn, rows):
    """Every partition's state, listing the definition (what the real code must not do)."""
    by_key = {r.partition: r for r in rows}
    return [(k, ps.partition_state(by_key.get(k))) for k in defn.keys]


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(1, 70), st.integers(0, 160), st.integers(1, 40),
       st.sampled_from([None, *ps.STATES]))
def test_counts_health_and_pages_match_the_model(scenario, width, offset, limit, state):
    defn, rows, shuffled = scenario
    status = ps.locate(shuffled, defn, None)
    truth = model(defn, rows)
    assert status.total == len(defn.keys)
    assert status.outside == sum(1 for r in rows if r.partition.startswith("gone"))
    assert status.counts == {s: sum(1 for _, t in truth if t == s) for s in ps.STATES}

    w = min(width, status.total)
    buckets: list[list[str]] = [[] for _ in range(w)]
    for i, (_, t) in enumerate(truth):
        buckets[i * w // status.total].append(t)
    assert all(buckets)  # every bucket has members
    assert ps.health(status, width) == [max(b, key=ps.SEVERITY.__getitem__) for b in buckets]

    entries = ps.page(status, state, offset, limit)
    expected = [(k, t) for k, t in truth if state is None or t == state][offset:offset + limit]
    keys = ps.page_keys(defn, [e.position for e in entries], None)
    assert list(zip(keys, [e.state for e in entries])) == expected
    by_key = {r.partition: r for r in rows}
    assert [e.row for e in entries] == [by_key.get(k) for k in keys]


def test_open_ended_definitions_count_as_of_and_rows_beyond_are_outside():
    daily = parse_definition("d", {"kind": "daily", "start": "2024-01-01"})
    as_of = datetime(2024, 1, 11, 12, tzinfo=timezone.utc)  # ten complete days
    rows = [row("2024-01-02", "SUCCEEDED", True), row("2024-01-10", "FAILED", False),
            row("2024-01-11", "RUNNING", False),  # not complete as of: outside
            row("2024-1-3", "SUCCEEDED", True)]   # not a key of this definition
    status = ps.locate(rows, daily, as_of)
    assert status.total == 10 and status.outside == 2
    assert status.counts == {"MATERIALIZED": 1, "FAILED": 1, "IN_PROGRESS": 0, "MISSING": 8}
    assert ps.health(status) == ["MISSING", "MATERIALIZED", *["MISSING"] * 7, "FAILED"]
    missing = ps.page(status, ps.MISSING, 7, 5)
    assert ps.page_keys(daily, [e.position for e in missing], as_of) == ["2024-01-09"]


def test_a_million_partitions_cost_rows_not_partitions():
    hourly = parse_definition("h", {"kind": "hourly", "start": "2000-01-01-00:00", "end": "2114-01-29-16:00"})
    n = hourly.size()
    assert n == 1_000_000
    last = hourly.key(n - 1)
    status = ps.locate([row(hourly.key(5), "SUCCEEDED", True), row(last, "FAILED", True)], hourly, None)
    assert status.counts[ps.MISSING] == n - 2
    entries = ps.page(status, ps.MISSING, n - 4, 10)  # the walk jumps whole gaps
    assert [e.position for e in entries] == [n - 3, n - 2]
    assert ps.health(status)[-1] == ps.FAILED and ps.health(status)[0] == ps.MISSING


def test_unpartitioned_asset_has_one_status():
    assert ps.unpartitioned_status(None).counts == {"MATERIALIZED": 0, "FAILED": 0, "IN_PROGRESS": 0, "MISSING": 1}
    status = ps.unpartitioned_status(row("", "SUCCEEDED", True))
    assert status.counts[ps.MATERIALIZED] == 1 and status.total == 1


def test_memoised_positions_stay_right_as_an_open_ended_definition_grows():
    daily = parse_definition("d", {"kind": "daily", "start": "2024-01-01"})
    rows = [row("2024-01-02", "SUCCEEDED", True), row("2024-01-20", "FAILED", False), row("nope", "FAILED", False)]
    memo: dict[str, int] = {}
    early = datetime(2024, 1, 11, tzinfo=timezone.utc)
    late = datetime(2024, 2, 1, tzinfo=timezone.utc)
    assert ps.locate(rows, daily, early, memo) == ps.locate(rows, daily, early)
    assert memo == {"2024-01-02": 1, "2024-01-20": 19, "nope": -1}
    assert ps.locate(rows, daily, early, memo).outside == 2  # 01-20 is not complete yet
    assert ps.locate(rows, daily, late, memo) == ps.locate(rows, daily, late)
    assert ps.locate(rows, daily, late, memo).counts[ps.FAILED] == 1


def test_positions_of_a_multi_with_a_growing_inner_dimension_are_not_memoised():
    dims = {"a": StaticPartitions(name="a", keys=("x", "y")),
            "b": parse_definition("b", {"kind": "daily", "start": "2024-01-01"})}
    multi = MultiPartitions(name="m", dimensions=dims)
    assert not ps.positions_are_stable(multi)
    memo: dict[str, int] = {}
    as_of = datetime(2024, 1, 11, tzinfo=timezone.utc)
    status = ps.locate([row("y|2024-01-02", "SUCCEEDED", True)], multi, as_of, memo)
    assert memo == {} and status.positions == [11] and status.total == 20
