"""Backfill chunks by arithmetic: which partitions chunk i holds, what it runs, and when it is over.

A backfill never stores its partition list. Its partitions are a *sequence* laid out by a
`ChunkLayout`: first `explicit_count` stored partitions (only a retry-failed child has any:
the partitions that did not succeed in its parent's planned chunks, each with the assets to
retry), then the positions [span_lo, span_hi) of the backfill's pinned selector, in
definition order or, with `newest_first`, in reverse. Chunk i is sequence positions
[i * chunk_size, (i + 1) * chunk_size): `chunk_slice` turns that into a range of stored rows
plus an (offset, limit) for `selector_slice`, so planning chunk 42 of a million costs the
same as planning chunk 0, and no chunk is ever computed by listing the ones before it.

Also here, all pure:
- the reprocess rule (`--reprocess all|missing|failed`) as a decision with a reason, from a
  partition's status (SPEC §3, `partition_status.partition_state`);
- how a finished chunk run's task states become partition outcomes, and chunk counts
  become the backfill's next event (`completion_event`), and how many chunks may be planned
  now (`chunks_to_plan`);
- the layout of a retry-failed child (`retry_layout`): the not-succeeded partitions of the
  planned chunks are listed (bounded by what was planned), the never-planned remainder of a
  canceled parent stays a position range (never expanded);
- progress (finished vs succeeded), rate and ETA for `backfill show`/`list`, and what
  retry-failed would take (`partitions_to_retry`).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from arcod.core.backfill_state import BackfillEvent, BackfillState
from arcod.core.partition_status import FAILED, IN_PROGRESS, MATERIALIZED, MISSING
from arcod.core.partition_status import STATES as STATUSES
from arcod.core.partition_status import partition_state
from arcod.core.partitions import selector_contains
from arcod.core.plan import Plan, PlanTask
from arcod.core.task_state import TaskState

DEFAULT_CHUNK_SIZE = 10
DEFAULT_MAX_CONCURRENCY = 4
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 1, 100_000
MIN_MAX_CONCURRENCY, MAX_MAX_CONCURRENCY = 1, 1000
DRY_RUN_CHUNKS = 3  # chunks whose per-partition decisions a dry-run lists


def chunk_run_key(backfill_id: str, chunk_index: int) -> str:
    """The run_key of chunk i's run (SPEC §6): deterministic, so no chunk is planned twice."""
    return f"backfill:{backfill_id}:chunk:{chunk_index}"


# -- chunk arithmetic --------------------------------------------------------------------------


def chunks_total(partitions_total: int, chunk_size: int) -> int:
    """How many chunks `partitions_total` partitions make: the last one may be short."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if partitions_total < 0:
        raise ValueError(f"partitions_total must be >= 0, not {partitions_total}")
    return -(-partitions_total // chunk_size)


def _check_index(i: int, total_chunks: int) -> None:
    if not 0 <= i < total_chunks:
        raise ValueError(f"chunk index {i} is outside 0..{total_chunks - 1}")


def chunk_for_index(i: int, chunk_size: int, total: int, newest_first: bool) -> tuple[int, int]:
    """Chunk i of a plain selection of `total` partitions, as (offset, limit) in definition order.

    The keys are `selector_slice(selector, defn, offset, limit)`, reversed when
    `newest_first` (chunk 0 then holds the newest partitions, newest first).
    """
    _check_index(i, chunks_total(total, chunk_size))
    start = i * chunk_size
    stop = min(start + chunk_size, total)
    if newest_first:
        return total - stop, stop - start
    return start, stop - start


class ChunkLayout(msgspec.Struct, frozen=True, kw_only=True):
    """How a backfill's partitions are laid out in sequence; see the module docstring."""

    chunk_size: int
    span_lo: int
    span_hi: int
    explicit_count: int = 0
    newest_first: bool = False

    @property
    def span_count(self) -> int:
        return self.span_hi - self.span_lo

    @property
    def partitions_total(self) -> int:
        return self.explicit_count + self.span_count

    @property
    def chunks_total(self) -> int:
        return chunks_total(self.partitions_total, self.chunk_size)


class ChunkSlice(msgspec.Struct, frozen=True, kw_only=True):
    """Where chunk i's partitions come from, in chunk order.

    First the stored explicit rows at positions [explicit_start, explicit_stop), then
    `selector_slice(selector, defn, span_offset, span_limit)` (reversed when `reverse`).
    """

    index: int
    explicit_start: int
    explicit_stop: int
    span_offset: int
    span_limit: int
    reverse: bool

    @property
    def size(self) -> int:
        return self.explicit_stop - self.explicit_start + self.span_limit


def chunk_slice(layout: ChunkLayout, i: int) -> ChunkSlice:
    """Chunk i of `layout`, in O(1)."""
    _check_index(i, layout.chunks_total)
    start = i * layout.chunk_size
    return positions_slice(layout, start, min(start + layout.chunk_size, layout.partitions_total), index=i)


def positions_slice(layout: ChunkLayout, start: int, stop: int, index: int = -1) -> ChunkSlice:
    """Sequence positions [start, stop) of `layout` (any range, not only a chunk), in O(1)."""
    if not 0 <= start <= stop <= layout.partitions_total:
        raise ValueError(f"positions [{start}, {stop}) are outside 0..{layout.partitions_total}")
    k = layout.explicit_count
    e_start, e_stop = min(start, k), min(stop, k)
    s_start, s_stop = max(start, k) - k, max(stop, k) - k  # positions within the span sequence
    if layout.newest_first:
        offset = layout.span_hi - s_stop
    else:
        offset = layout.span_lo + s_start
    return ChunkSlice(
        index=index, explicit_start=e_start, explicit_stop=e_stop,
        span_offset=offset, span_limit=s_stop - s_start, reverse=layout.newest_first,
    )


def chunk_of_position(layout: ChunkLayout, position: int) -> int:
    """The chunk holding sequence position `position`."""
    if not 0 <= position < layout.partitions_total:
        raise ValueError(f"position {position} is outside 0..{layout.partitions_total - 1}")
    return position // layout.chunk_size


def chunk_keys(
    piece: ChunkSlice,
    explicit_rows: Sequence[tuple[str, Sequence[str]]],
    span_keys: Sequence[str],
    all_assets: Sequence[str],
) -> list[tuple[str, tuple[str, ...]]]:
    """Chunk order (partition, assets to run) from the stored rows and the span's keys.

    `explicit_rows` are the stored rows [explicit_start, explicit_stop) with their own
    assets; `span_keys` is what `selector_slice` returned for (span_offset, span_limit) in
    definition order. Span partitions take every asset of the backfill.
    """
    if len(explicit_rows) != piece.explicit_stop - piece.explicit_start:
        raise ValueError("explicit_rows does not match the chunk's stored range")
    if len(span_keys) != piece.span_limit:
        raise ValueError("span_keys does not match the chunk's span")
    ordered = list(reversed(span_keys)) if piece.reverse else list(span_keys)
    assets = tuple(all_assets)
    return [(p, tuple(a)) for p, a in explicit_rows] + [(p, assets) for p in ordered]


# -- reprocess -----------------------------------------------------------------------------------


class Reprocess(enum.StrEnum):
    ALL = "all"
    MISSING = "missing"
    FAILED = "failed"


class ReprocessDecision(msgspec.Struct, frozen=True):
    take: bool
    reason: str


_REASONS: dict[tuple[Reprocess, str], ReprocessDecision] = {}
for _status in STATUSES:
    _REASONS[(Reprocess.ALL, _status)] = ReprocessDecision(True, "reprocess all")
_REASONS.update({
    (Reprocess.MISSING, MISSING): ReprocessDecision(True, "missing"),
    (Reprocess.MISSING, MATERIALIZED): ReprocessDecision(False, "already materialized"),
    (Reprocess.MISSING, FAILED): ReprocessDecision(False, "last attempt failed (--reprocess failed takes it)"),
    (Reprocess.MISSING, IN_PROGRESS): ReprocessDecision(False, "in progress in another run"),
    (Reprocess.FAILED, MISSING): ReprocessDecision(True, "missing"),
    (Reprocess.FAILED, FAILED): ReprocessDecision(True, "last attempt failed"),
    (Reprocess.FAILED, MATERIALIZED): ReprocessDecision(False, "already materialized"),
    (Reprocess.FAILED, IN_PROGRESS): ReprocessDecision(False, "in progress in another run"),
})


def reprocess_decision(mode: Reprocess | str, status: str) -> ReprocessDecision:
    """Whether a (asset, partition) of this status (`partition_status.partition_state`) is
    run under `--reprocess mode`, and why.

    `all` takes everything. `missing` takes only what never ran (Airflow's "missing": a
    partition with any history is left alone). `failed` also takes what last failed. Neither
    takes a partition another run is materialising now: its outcome is not known yet.
    """
    try:
        return _REASONS[(Reprocess(mode), status)]
    except KeyError:
        raise ValueError(f"unknown partition status {status!r}; expected one of {', '.join(STATUSES)}") from None


def skipped_by_history(mode: Reprocess | str, selector: Any, defn: Any, assets: Sequence[str],
                       rows: Mapping[tuple[str, str], Any], as_of: datetime) -> tuple[Counter[str], int]:
    """What `--reprocess mode` leaves out of a selection, from the status rows of its assets
    (`(asset, partition) -> StatusRow`, every partition that ever ran): the skipped
    (asset, partition) pairs counted by reason, and how many partitions have all of their
    assets skipped. Partitions without a row are MISSING, which every mode takes, so the
    cost is the history, never the selection.
    """
    skipped: Counter[str] = Counter()
    per_partition: Counter[str] = Counter()
    for (_, partition), row in rows.items():
        if not selector_contains(selector, defn, partition, as_of):
            continue
        decision = reprocess_decision(mode, partition_state(row))
        if not decision.take:
            skipped[decision.reason] += 1
            per_partition[partition] += 1
    return skipped, sum(1 for n in per_partition.values() if n == len(assets))


# -- outcomes ----------------------------------------------------------------------------------


class ChunkState(enum.StrEnum):
    """A chunk, and each of its partitions: PENDING until planned, RUNNING while its run is
    not finished, then the run's outcome. SKIPPED: reprocess left it nothing to run."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    SKIPPED = "SKIPPED"


CHUNK_DONE_STATES = frozenset({ChunkState.SUCCEEDED, ChunkState.FAILED, ChunkState.CANCELED, ChunkState.SKIPPED})


def chunk_state_for_run(run_state: str) -> ChunkState:
    """A finished chunk run's state as the chunk's (they share the names)."""
    state = ChunkState(run_state)
    if state not in (ChunkState.SUCCEEDED, ChunkState.FAILED, ChunkState.CANCELED):
        raise ValueError(f"run state {run_state!r} is not a finished state")
    return state


def partition_outcome(task_states: Iterable[TaskState | str]) -> ChunkState:
    """A partition's outcome in a finished chunk, from its tasks (one per asset).

    SUCCEEDED if every task did; FAILED if one failed or was skipped for an upstream failure;
    otherwise (canceled, or never started in a canceled run) CANCELED. No task: SKIPPED.
    """
    states = [TaskState(s) for s in task_states]
    if not states:
        return ChunkState.SKIPPED
    if all(s == TaskState.SUCCEEDED for s in states):
        return ChunkState.SUCCEEDED
    if any(s in (TaskState.FAILED, TaskState.SKIPPED) for s in states):
        return ChunkState.FAILED
    return ChunkState.CANCELED


def live_partition_state(task_states: Iterable[TaskState | str], chunk_done: bool) -> ChunkState:
    """A partition's state for listings: its outcome once its chunk finished, else RUNNING."""
    states = list(task_states)
    if chunk_done or not states:
        return partition_outcome(states)
    return ChunkState.RUNNING


class ChunkCounts(msgspec.Struct, kw_only=True):
    """A backfill's chunks by state; `planned` counts every chunk planned so far (= next_chunk)."""

    total: int
    planned: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    skipped: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.canceled + self.skipped

    @property
    def active(self) -> int:
        return self.planned - self.done

    def by_state(self) -> dict[str, int]:
        return {
            ChunkState.PENDING: self.total - self.planned,
            ChunkState.RUNNING: self.active,
            ChunkState.SUCCEEDED: self.succeeded,
            ChunkState.FAILED: self.failed,
            ChunkState.CANCELED: self.canceled,
            ChunkState.SKIPPED: self.skipped,
        }


def chunks_to_plan(state: BackfillState | str, counts: ChunkCounts, max_concurrency: int) -> int:
    """How many more chunk runs may start now: only a RUNNING backfill plans, and never more
    than `max_concurrency` chunk runs are active at once."""
    if BackfillState(state) != BackfillState.RUNNING:
        return 0
    return max(0, min(max_concurrency - counts.active, counts.total - counts.planned))


def completion_event(state: BackfillState | str, counts: ChunkCounts) -> BackfillEvent | None:
    """The event the chunk counts call for, if any.

    RUNNING with every chunk planned and none active: SUCCEEDED if each succeeded (a chunk
    reprocess left empty counts as succeeded), else FAILED. CANCELING with none active:
    CANCELED. PAUSED waits for resume even when nothing is left (see backfill_state).
    """
    state = BackfillState(state)
    if counts.active > 0:
        return None
    if state == BackfillState.CANCELING:
        return BackfillEvent.NO_ACTIVE_CHUNKS
    if state == BackfillState.RUNNING and counts.planned >= counts.total:
        if counts.succeeded + counts.skipped == counts.total:
            return BackfillEvent.ALL_CHUNKS_SUCCEEDED
        return BackfillEvent.ALL_CHUNKS_FINISHED_SOME_FAILED
    return None


# -- planning a chunk's run --------------------------------------------------------------------


def sub_plan(plan: Plan, keep: Iterable[str]) -> Plan:
    """The tasks of `plan` in `keep`, in plan order, with edges to dropped tasks removed: a
    dropped upstream task is one the chunk takes as materialised (reprocess skipped it, or
    it succeeded in the parent backfill)."""
    kept = frozenset(keep)
    return Plan(tasks=tuple(
        msgspec.structs.replace(t, deps=tuple(d for d in t.deps if d in kept))
        for t in plan.tasks if t.task_id in kept
    ))


def plan_tasks_for(plan: Plan) -> dict[tuple[str, str | None], PlanTask]:
    return {(t.asset, t.partition): t for t in plan.tasks}


# -- retry-failed --------------------------------------------------------------------------------


def failed_partitions(
    keys_in_order: Sequence[str], task_rows: Iterable[tuple[str, str, str]]
) -> list[tuple[str, tuple[str, ...]]]:
    """The partitions of one chunk that did not fully succeed, in chunk order, each with the
    assets whose task did not succeed (sorted). `task_rows` are (asset, partition, state).
    A partition reprocess skipped has no task and is not listed: nothing was attempted."""
    wanted: dict[str, list[str]] = {}
    for asset, partition, state in task_rows:
        if TaskState(state) != TaskState.SUCCEEDED:
            wanted.setdefault(partition, []).append(asset)
    return [(k, tuple(sorted(wanted[k]))) for k in keys_in_order if k in wanted]


class RetryLayout(msgspec.Struct, frozen=True, kw_only=True):
    """A retry-failed child: `listed` stored partitions from the parent's planned chunks,
    then the parent's stored rows [copy_start, copy_stop) (unplanned, copied), then the
    parent's span narrowed to [span_lo, span_hi) (unplanned, never expanded)."""

    listed: int
    copy_start: int
    copy_stop: int
    span_lo: int
    span_hi: int

    def layout(self, chunk_size: int, newest_first: bool) -> ChunkLayout:
        return ChunkLayout(
            chunk_size=chunk_size, span_lo=self.span_lo, span_hi=self.span_hi,
            explicit_count=self.listed + self.copy_stop - self.copy_start, newest_first=newest_first,
        )


def retry_layout(parent: ChunkLayout, next_chunk: int, listed: int) -> RetryLayout:
    """The child of a parent that planned chunks [0, next_chunk): `listed` partitions that
    did not succeed in them, plus every partition of the chunks never planned (only a
    canceled parent has any), as the parent's own rows and span narrowed to what is left."""
    unplanned_from = min(next_chunk * parent.chunk_size, parent.partitions_total)
    k = parent.explicit_count
    copy_start, copy_stop = min(unplanned_from, k), k
    done_in_span = max(unplanned_from, k) - k  # span positions (in sequence order) already planned
    if parent.newest_first:
        lo, hi = parent.span_lo, parent.span_hi - done_in_span
    else:
        lo, hi = parent.span_lo + done_in_span, parent.span_hi
    return RetryLayout(listed=listed, copy_start=copy_start, copy_stop=copy_stop, span_lo=lo, span_hi=max(lo, hi))


# -- progress --------------------------------------------------------------------------------------


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far a backfill is. *Finished* partitions have an outcome, whatever it is (succeeded,
    failed, canceled, skipped); *succeeded* ones are those that needed nothing more: their
    tasks succeeded, or `--reprocess` skipped them (as a chunk of them counts as succeeded).
    `fraction` is the finished share (the name it has always had); `fraction_succeeded`
    reaches 1.0 exactly when every partition succeeded, so a FAILED or CANCELED backfill
    never reads as complete."""

    fraction: float
    rate_per_s: float | None
    eta_s: float | None
    partitions_finished: int = 0
    partitions_succeeded: int = 0
    fraction_succeeded: float = 0.0


def _share(part: int, total: int) -> float:
    return 1.0 if total <= 0 else round(part / total, 6)


def progress(total: int, done: int, elapsed_s: float, running: bool, succeeded: int = 0) -> Progress:
    """Share of partitions finished (`done`) and succeeded, partitions finished per second so
    far, and the time left at that rate (only while the backfill runs and has a rate)."""
    rate = done / elapsed_s if elapsed_s > 0 and done > 0 else None
    eta = (total - done) / rate if running and rate else None
    return Progress(fraction=_share(done, total), rate_per_s=None if rate is None else round(rate, 3),
                    eta_s=None if eta is None else round(eta, 1), partitions_finished=done,
                    partitions_succeeded=succeeded, fraction_succeeded=_share(succeeded, total))


def backfill_progress(total: int, outcomes: Mapping[str, int], elapsed_s: float, running: bool) -> Progress:
    """`progress` from a backfill's partition outcome counters (`ChunkState` -> count)."""
    finished = sum(outcomes.get(s, 0) for s in CHUNK_DONE_STATES)
    succeeded = outcomes.get(ChunkState.SUCCEEDED, 0) + outcomes.get(ChunkState.SKIPPED, 0)
    return progress(total, finished, elapsed_s, running, succeeded)


def progress_dict(p: Progress) -> dict[str, Any]:
    """`progress` in `backfill show`/`list`: `partitions_done` and `fraction` (finished, kept
    for compatibility) beside the explicit finished and succeeded counts and shares."""
    return {
        "partitions_done": p.partitions_finished,
        "fraction": p.fraction,
        "partitions_finished": p.partitions_finished,
        "fraction_finished": p.fraction,
        "partitions_succeeded": p.partitions_succeeded,
        "fraction_succeeded": p.fraction_succeeded,
        "rate_per_s": p.rate_per_s,
        "eta_s": p.eta_s,
    }


def partitions_to_retry(total: int, planned: int, failed: int, canceled: int) -> int:
    """How many partitions retry-failed would take from a finished backfill: those that failed
    or were canceled in its planned chunks, plus (a canceled one) those never planned.
    Arguments are the backfill's partition counters."""
    return failed + canceled + max(0, total - planned)


def partition_counts(
    total: int, planned: int, outcomes: Mapping[str, int]
) -> dict[str, int]:
    """Partitions by state: PENDING (unplanned), RUNNING (in an active chunk), and the
    outcomes counted when each chunk finished (plus SKIPPED at planning)."""
    finished = sum(outcomes.get(s, 0) for s in CHUNK_DONE_STATES)
    return {
        ChunkState.PENDING: total - planned,
        ChunkState.RUNNING: planned - finished,
        **{s: outcomes.get(s, 0) for s in (ChunkState.SUCCEEDED, ChunkState.FAILED,
                                           ChunkState.CANCELED, ChunkState.SKIPPED)},
    }
