"""Backfill chunks by arithmetic, reprocess decisions, outcomes, completion, retry layouts,
and the validation of a create request. Pure: no event loop, no database."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.backfill_chunks import (
    ChunkCounts,
    ChunkLayout,
    ChunkState,
    Reprocess,
    chunk_for_index,
    chunk_keys,
    chunk_of_position,
    chunk_run_key,
    chunk_slice,
    chunks_to_plan,
    chunks_total,
    completion_event,
    failed_partitions,
    live_partition_state,
    partition_counts,
    partition_outcome,
    positions_slice,
    progress,
    reprocess_decision,
    retry_layout,
    skipped_by_history,
    sub_plan,
)
from arcod.core.backfill_request import MAX_CHUNK_TASKS, prepare_backfill
from arcod.core.backfill_state import BackfillEvent, BackfillState
from arcod.core.definitions import build_definitions
from arcod.core.errors import ArcodError
from arcod.core.graph import AssetGraph
from arcod.core.partition_status import FAILED, IN_PROGRESS, MATERIALIZED, MISSING, STATES, StatusRow, partition_state
from arcod.core.partitions import (
    AllSelector,
    KeysSelector,
    MultiSelector,
    RangeSelector,
    StaticPartitions,
    parse_definition,
    parse_definitions,
    selector_contains,
    selector_count,
    selector_slice,
    validate_selector,
)
from arcod.core.planning import build_plan

S = BackfillState
NOW = datetime(2024, 6, 1, tzinfo=timezone.utc)

# -- chunk arithmetic -------------------------------------------------------------------------


def test_chunks_total_rounds_up_and_refuses_nonsense():
    assert [chunks_total(n, 3) for n in (0, 1, 3, 4, 9, 10)] == [0, 1, 1, 2, 3, 4]
    assert chunks_total(1_000_000, 10) == 100_000
    with pytest.raises(ValueError):
        chunks_total(10, 0)
    with pytest.raises(ValueError):
        chunks_total(-1, 3)


def test_chunk_for_index_in_definition_order_and_newest_first():
    assert [chunk_for_index(i, 3, 10, False) for i in range(4)] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    # Newest first: chunk 0 holds the newest three, the short chunk is the oldest one.
    assert [chunk_for_index(i, 3, 10, True) for i in range(4)] == [(7, 3), (4, 3), (1, 3), (0, 1)]
    with pytest.raises(ValueError):
        chunk_for_index(4, 3, 10, False)
    with pytest.raises(ValueError):
        chunk_for_index(-1, 3, 10, False)


def test_a_million_partitions_cost_nothing_to_locate():
    layout = ChunkLayout(chunk_size=10, span_lo=0, span_hi=1_000_000)
    assert layout.chunks_total == 100_000
    last = chunk_slice(layout, 99_999)
    assert (last.span_offset, last.span_limit) == (999_990, 10)
    assert chunk_of_position(layout, 999_999) == 99_999
    assert chunk_run_key("b-1", 42) == "backfill:b-1:chunk:42"


@given(total=st.integers(0, 300), size=st.integers(1, 40), newest=st.booleans())
def test_chunk_spans_cover_the_positions_exactly_once(total, size, newest):
    seen: list[int] = []
    for i in range(chunks_total(total, size)):
        offset, limit = chunk_for_index(i, size, total, newest)
        assert 1 <= limit <= size
        span = list(range(offset, offset + limit))
        seen.extend(reversed(span) if newest else span)
    assert seen == (list(reversed(range(total))) if newest else list(range(total)))


STATIC_KEYS = [f"k{i:03d}" for i in range(60)]


MULTI = parse_definitions({
    "color": {"kind": "static", "keys": ["red", "green", "blue", "cyan", "gray"]},
    "day": {"kind": "daily", "start": "2024-01-01", "end": "2024-01-08"},
    "m": {"kind": "multi", "dimensions": {"color": "color", "day": "day"}},
})["m"]


def simple_selector(draw, keys):
    size = len(keys)
    kind = draw(st.sampled_from(["all", "range", "keys"]))
    if kind == "all":
        return AllSelector()
    if kind == "range":
        a = draw(st.integers(0, size - 1))
        b = draw(st.integers(a, size - 1))
        return RangeSelector(start=keys[a], end=keys[b])
    picked = sorted(set(draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=20))))
    return KeysSelector(keys=tuple(keys[i] for i in picked))


@st.composite
def selections(draw):
    """A small definition (static, daily or multi) and a canonical selector over it."""
    kind = draw(st.sampled_from(["static", "daily", "multi"]))
    if kind == "multi":
        dims = {name: simple_selector(draw, d.key_range(0, d.size(None))) for name, d in MULTI.dims}
        return MULTI, validate_selector(MultiSelector(dims=dims), MULTI)
    if kind == "static":
        defn = StaticPartitions(name="s", keys=tuple(STATIC_KEYS[: draw(st.integers(1, 60))]))
    else:
        defn = parse_definition("d", {"kind": "daily", "start": "2024-01-01", "end": "2024-03-31"})
    return defn, simple_selector(draw, defn.key_range(0, defn.size(None)))


@settings(max_examples=200, deadline=None)
@given(sel=selections(), size=st.integers(1, 25), newest=st.booleans())
def test_chunks_partition_the_selection_exactly(sel, size, newest):
    """No gap, no overlap, definition order (reversed with newest_first), every chunk full but
    the last: checked against a brute-force expansion of the definition."""
    defn, selector = sel
    expected = [k for k in defn.key_range(0, defn.size(None)) if selector_contains(selector, defn, k)]
    total = selector_count(selector, defn)
    assert total == len(expected)
    layout = ChunkLayout(chunk_size=size, span_lo=0, span_hi=total, newest_first=newest)
    got: list[str] = []
    for i in range(layout.chunks_total):
        piece = chunk_slice(layout, i)
        span = selector_slice(selector, defn, piece.span_offset, piece.span_limit)
        members = chunk_keys(piece, [], span, ["a", "b"])
        assert all(assets == ("a", "b") for _, assets in members)
        assert len(members) == (size if i < layout.chunks_total - 1 else total - size * i)
        # The plain form agrees with the layout form.
        assert chunk_for_index(i, size, total, newest) == (piece.span_offset, piece.span_limit)
        got.extend(k for k, _ in members)
    assert got == (expected[::-1] if newest else expected)


@st.composite
def layouts(draw):
    k = draw(st.integers(0, 30))
    lo = draw(st.integers(0, 30))
    hi = draw(st.integers(lo, lo + 40))
    return ChunkLayout(chunk_size=draw(st.integers(1, 12)), span_lo=lo, span_hi=hi, explicit_count=k,
                       newest_first=draw(st.booleans()))


def sequence(layout: ChunkLayout) -> list[str]:
    """The layout's partitions by brute force: listed rows e0.., then span positions."""
    span = [f"p{i}" for i in range(layout.span_lo, layout.span_hi)]
    return [f"e{i}" for i in range(layout.explicit_count)] + (span[::-1] if layout.newest_first else span)


def keys_of(layout: ChunkLayout, piece) -> list[str]:
    rows = [(f"e{i}", ("x",)) for i in range(piece.explicit_start, piece.explicit_stop)]
    span = [f"p{i}" for i in range(piece.span_offset, piece.span_offset + piece.span_limit)]
    return [k for k, _ in chunk_keys(piece, rows, span, ["a"])]


@settings(max_examples=300)
@given(layout=layouts())
def test_listed_rows_then_span_are_chunked_without_gap_or_overlap(layout):
    got: list[str] = []
    for i in range(layout.chunks_total):
        got.extend(keys_of(layout, chunk_slice(layout, i)))
    assert got == sequence(layout)


@settings(max_examples=300)
@given(layout=layouts(), data=st.data())
def test_any_position_range_matches_the_sequence(layout, data):
    total = layout.partitions_total
    start = data.draw(st.integers(0, total))
    stop = data.draw(st.integers(start, total))
    assert keys_of(layout, positions_slice(layout, start, stop)) == sequence(layout)[start:stop]


@settings(max_examples=300)
@given(parent=layouts(), data=st.data())
def test_retry_layout_is_the_listed_failures_then_exactly_the_unplanned_rest(parent, data):
    next_chunk = data.draw(st.integers(0, parent.chunks_total))
    listed = data.draw(st.integers(0, 10))
    rl = retry_layout(parent, next_chunk, listed)
    child = rl.layout(parent.chunk_size, parent.newest_first)
    unplanned = sequence(parent)[min(next_chunk * parent.chunk_size, parent.partitions_total):]
    copied = [f"e{i}" for i in range(rl.copy_start, rl.copy_stop)]
    span = [f"p{i}" for i in range(rl.span_lo, rl.span_hi)]
    child_seq = [f"f{i}" for i in range(listed)] + copied + (span[::-1] if parent.newest_first else span)
    assert child_seq == [f"f{i}" for i in range(listed)] + unplanned
    assert child.partitions_total == len(child_seq)


def test_a_parent_that_planned_everything_leaves_only_its_failures():
    parent = ChunkLayout(chunk_size=10, span_lo=0, span_hi=1_000_000)
    rl = retry_layout(parent, parent.chunks_total, listed=7)
    assert rl.layout(10, False).partitions_total == 7
    assert rl.span_hi - rl.span_lo == 0 and rl.copy_stop - rl.copy_start == 0


def test_a_canceled_million_keeps_its_remainder_as_a_range():
    parent = ChunkLayout(chunk_size=10, span_lo=0, span_hi=1_000_000, newest_first=True)
    rl = retry_layout(parent, next_chunk=5, listed=3)
    assert (rl.span_lo, rl.span_hi) == (0, 999_950)  # the 50 newest were planned
    assert rl.layout(10, True).partitions_total == 3 + 999_950


# -- reprocess -------------------------------------------------------------------------------------


EXPECTED_TAKE = {
    ("all", MATERIALIZED): True, ("all", FAILED): True, ("all", IN_PROGRESS): True, ("all", MISSING): True,
    ("missing", MATERIALIZED): False, ("missing", FAILED): False, ("missing", IN_PROGRESS): False,
    ("missing", MISSING): True,
    ("failed", MATERIALIZED): False, ("failed", FAILED): True, ("failed", IN_PROGRESS): False,
    ("failed", MISSING): True,
}


@pytest.mark.parametrize(("mode", "status"), list(itertools.product([str(m) for m in Reprocess], STATES)))
def test_reprocess_decides_every_mode_and_status_with_a_reason(mode, status):
    decision = reprocess_decision(mode, status)
    assert decision.take is EXPECTED_TAKE[(mode, status)]
    assert decision.reason


def test_reprocess_refuses_an_unknown_status_or_mode():
    with pytest.raises(ValueError):
        reprocess_decision("missing", "GONE")
    with pytest.raises(ValueError):
        reprocess_decision("sometimes", MISSING)


ROW_OF_STATE = {
    MATERIALIZED: StatusRow(partition="", last_materialized_at="t", last_attempt_state="SUCCEEDED"),
    FAILED: StatusRow(partition="", last_materialized_at="t", last_attempt_state="FAILED"),
    IN_PROGRESS: StatusRow(partition="", last_attempt_state="RUNNING"),
    MISSING: StatusRow(partition="", last_attempt_state="CANCELED"),  # ran, never materialised
}


@settings(max_examples=150, deadline=None)
@given(sel=selections(), mode=st.sampled_from([str(m) for m in Reprocess]), data=st.data())
def test_skipped_by_history_agrees_with_deciding_every_selected_pair(sel, mode, data):
    """Counting from the history rows alone (some outside the selection) gives what deciding
    every (asset, selected partition) pair one by one gives, rows missing meaning MISSING."""
    defn, selector = sel
    assets = ["a", "b"]
    every_key = defn.key_range(0, defn.size(None))
    rows = {}
    for key in data.draw(st.lists(st.sampled_from(every_key), max_size=30, unique=True)):
        for asset in data.draw(st.lists(st.sampled_from(assets), min_size=1, max_size=2, unique=True)):
            state = data.draw(st.sampled_from(sorted(ROW_OF_STATE)))
            rows[(asset, key)] = msgspec.structs.replace(ROW_OF_STATE[state], partition=key)
    expected_reasons: dict[str, int] = {}
    expected_partitions = 0
    for key in every_key:
        if not selector_contains(selector, defn, key, NOW):
            continue
        skipped = [reprocess_decision(mode, partition_state(rows.get((asset, key)))) for asset in assets]
        for decision in skipped:
            if not decision.take:
                expected_reasons[decision.reason] = expected_reasons.get(decision.reason, 0) + 1
        expected_partitions += all(not d.take for d in skipped)
    reasons, partitions = skipped_by_history(mode, selector, defn, assets, rows, NOW)
    assert dict(reasons) == expected_reasons
    assert partitions == expected_partitions


# -- outcomes and completion -------------------------------------------------------------------------


def test_partition_outcome_from_its_tasks():
    assert partition_outcome([]) == ChunkState.SKIPPED
    assert partition_outcome(["SUCCEEDED", "SUCCEEDED"]) == ChunkState.SUCCEEDED
    assert partition_outcome(["SUCCEEDED", "SKIPPED"]) == ChunkState.FAILED
    assert partition_outcome(["FAILED", "CANCELED"]) == ChunkState.FAILED
    assert partition_outcome(["SUCCEEDED", "CANCELED"]) == ChunkState.CANCELED
    assert partition_outcome(["PENDING"]) == ChunkState.CANCELED
    assert live_partition_state(["SUCCEEDED", "RUNNING"], chunk_done=False) == ChunkState.RUNNING
    assert live_partition_state([], chunk_done=False) == ChunkState.SKIPPED


def counts(total=4, planned=4, succeeded=0, failed=0, canceled=0, skipped=0) -> ChunkCounts:
    return ChunkCounts(total=total, planned=planned, succeeded=succeeded, failed=failed, canceled=canceled,
                       skipped=skipped)


COMPLETION_CASES = [
    # (state, counts, expected event)
    (S.RUNNING, counts(succeeded=3, skipped=1), BackfillEvent.ALL_CHUNKS_SUCCEEDED),
    (S.RUNNING, counts(succeeded=3, failed=1), BackfillEvent.ALL_CHUNKS_FINISHED_SOME_FAILED),
    (S.RUNNING, counts(succeeded=3, canceled=1), BackfillEvent.ALL_CHUNKS_FINISHED_SOME_FAILED),
    (S.RUNNING, counts(succeeded=3), None),  # one still active
    (S.RUNNING, counts(planned=3, succeeded=3), None),  # one not planned yet
    (S.PAUSED, counts(succeeded=4), None),  # waits for resume
    (S.PAUSED, counts(planned=2, succeeded=2), None),
    (S.CANCELING, counts(planned=2, succeeded=1), None),  # one still active
    (S.CANCELING, counts(planned=2, succeeded=1, canceled=1), BackfillEvent.NO_ACTIVE_CHUNKS),
    (S.CANCELING, counts(planned=0), BackfillEvent.NO_ACTIVE_CHUNKS),
    (S.SUCCEEDED, counts(succeeded=4), None),
    (S.FAILED, counts(succeeded=3, failed=1), None),
    (S.CANCELED, counts(planned=2, canceled=2), None),
]


@pytest.mark.parametrize(("state", "chunk_counts", "event"), COMPLETION_CASES)
def test_completion_event_for_each_state(state, chunk_counts, event):
    assert completion_event(state, chunk_counts) == event


def test_every_state_is_covered_by_the_completion_cases():
    assert {case[0] for case in COMPLETION_CASES} == set(S)


@pytest.mark.parametrize("state", list(S))
def test_only_a_running_backfill_plans_and_never_past_max_concurrency(state):
    c = counts(total=10, planned=5, succeeded=2)  # 3 active
    expected = 1 if state == S.RUNNING else 0
    assert chunks_to_plan(state, c, max_concurrency=4) == expected
    assert chunks_to_plan(state, c, max_concurrency=3) == 0
    assert chunks_to_plan(state, counts(total=10, planned=9, succeeded=9), 4) == (1 if state == S.RUNNING else 0)


def test_counts_by_state_and_progress():
    c = counts(total=10, planned=6, succeeded=3, failed=1, skipped=1)
    assert c.by_state() == {"PENDING": 4, "RUNNING": 1, "SUCCEEDED": 3, "FAILED": 1, "CANCELED": 0, "SKIPPED": 1}
    assert partition_counts(100, 60, {"SUCCEEDED": 40, "SKIPPED": 5}) == {
        "PENDING": 40, "RUNNING": 15, "SUCCEEDED": 40, "FAILED": 0, "CANCELED": 0, "SKIPPED": 5}
    p = progress(total=100, done=25, elapsed_s=5.0, running=True)
    assert (p.fraction, p.rate_per_s, p.eta_s) == (0.25, 5.0, 15.0)
    assert progress(100, 0, 5.0, True).eta_s is None
    assert progress(100, 100, 5.0, False).eta_s is None


def test_failed_partitions_keep_chunk_order_and_only_what_did_not_succeed():
    rows = [("p", "d2", "SUCCEEDED"), ("q", "d2", "SKIPPED"), ("p", "d1", "FAILED"), ("q", "d1", "SKIPPED"),
            ("p", "d3", "SUCCEEDED"), ("q", "d3", "SUCCEEDED")]
    assert failed_partitions(["d3", "d2", "d1"], rows) == [("d2", ("q",)), ("d1", ("p", "q"))]


def test_sub_plan_drops_edges_to_left_out_tasks():
    graph = AssetGraph.from_deps({"p": [], "q": ["p"]})
    plan = build_plan(graph, ["p", "q"], ["d1", "d2"], {"p", "q"})
    kept = sub_plan(plan, ["q[d1]", "p[d2]", "q[d2]"])
    assert {t.task_id: t.deps for t in kept.tasks} == {"p[d2]": (), "q[d1]": (), "q[d2]": ("p[d2]",)}


# -- validation of a create request -------------------------------------------------------------------


def defs():
    return build_definitions([("assets.toml", {
        "partitions": {
            "daily": {"kind": "daily", "start": "2024-01-01", "end": "2024-02-01"},
            "hourly": {"kind": "hourly", "start": "2020-01-01-00:00"},
            "region": {"kind": "static", "keys": ["eu", "us"]},
        },
        "assets": {
            "p": {"command": ["true"], "partitions": "daily"},
            "q": {"command": ["true"], "partitions": "daily", "deps": ["p"]},
            "h": {"command": ["true"], "partitions": "hourly"},
            "r": {"command": ["true"], "partitions": "region"},
            "u": {"command": ["true"]},
        },
    })])


def prepare(select=("p",), partitions="all", **kw):
    args = dict(upstream=None, downstream=None, chunk_size=None, max_concurrency=None, newest_first=False,
                reprocess="all", as_of=NOW)
    args.update(kw)
    return prepare_backfill(defs(), select=list(select), partitions=partitions, **args)


def test_prepare_resolves_counts_and_defaults():
    spec = prepare(("p+",), "2024-01-03..2024-01-12")
    assert spec.assets == ("p", "q") and spec.definition == "daily"
    assert spec.partitions_total == 10 and spec.chunk_size == 10 and spec.max_concurrency == 4
    assert spec.layout.chunks_total == 1


def test_prepare_pins_open_ended_all_but_fingerprints_the_request_as_given():
    early = prepare(("h",), "all")
    later = prepare(("h",), "all", as_of=NOW + timedelta(hours=5))
    assert later.partitions_total == early.partitions_total + 5
    assert isinstance(early.selector, RangeSelector)
    assert early.fingerprint == later.fingerprint
    assert prepare(("h",), "all", chunk_size=20).fingerprint != early.fingerprint
    assert prepare(("h",), "all", reprocess="missing").fingerprint != early.fingerprint


@pytest.mark.parametrize(("kw", "code", "needle"), [
    (dict(select=("u",)), "partition_error", "not partitioned"),
    (dict(select=("p", "u")), "partition_error", "u is not partitioned"),
    (dict(select=("p", "r")), "mixed_partitions", "daily: p; region: r"),
    (dict(chunk_size=0), "bad_request", "--chunk-size"),
    (dict(chunk_size=100_001), "bad_request", "--chunk-size"),
    (dict(max_concurrency=0), "bad_request", "--max-concurrency"),
    (dict(max_concurrency=1001), "bad_request", "--max-concurrency"),
    (dict(select=("p+",), chunk_size=MAX_CHUNK_TASKS), "bad_request", "tasks"),
    (dict(reprocess="sometimes"), "bad_request", "--reprocess"),
    (dict(partitions="2024-05-01..2024-05-02"), "partition_error", ""),
    (dict(select=("nope",)), "unknown_assets", "nope"),
])
def test_prepare_refuses_with_a_code_and_a_message(kw, code, needle):
    with pytest.raises(ArcodError) as info:
        prepare(**kw)
    assert info.value.code == code
    assert needle in info.value.message
