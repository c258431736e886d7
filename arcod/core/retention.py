"""Which finished runs and backfills retention may remove, and which it must keep.

Pruning must never take anything still needed:
- a run is a *candidate* when it is finished (SUCCEEDED, FAILED, CANCELED), finished before the
  cutoff, and not *busy* (the store found an attempt of it still open, or a message about it
  still in the outbox: someone may yet act on it);
- lineage: a run that is kept keeps its parent, and so its whole chain up to the root. A
  rerun's parent is what `runs tree` draws it under and what a repeat of the rerun is derived
  from, so the kept part of a lineage group is always a tree with its root;
- backfills: a chunk run goes only with its backfill, and a backfill only with its whole
  retry-failed family (same `root_backfill_id`: a child names its parent, and retry-failed
  reads the parent's chunk runs). A family goes when every member is finished before the
  cutoff and every chunk run of it is itself prunable; otherwise the family and all its chunk
  runs (with their ancestors) stay.

The store hands in a *closed* universe (every run of each lineage group it loaded, every
backfill of each family, every chunk run of those backfills), so the decision needs nothing
else. Pure: no I/O, no clock; the cutoff comes in as an ISO string comparable with the stored
timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

FINISHED_RUN_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
FINISHED_BACKFILL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    parent_run_id: str | None
    state: str
    finished_at: str | None
    backfill_id: str | None = None


class BackfillInfo(msgspec.Struct, frozen=True, kw_only=True):
    backfill_id: str
    root_backfill_id: str
    state: str
    finished_at: str | None


class PruneDecision(msgspec.Struct, frozen=True, kw_only=True):
    runs: frozenset[str]
    backfills: frozenset[str]
    # Why candidates were kept, counted once per run: it is busy, a descendant is kept
    # (lineage), or its backfill family is not finished and old enough (backfill).
    kept_busy: int = 0
    kept_lineage: int = 0
    kept_backfill: int = 0


def _old(finished_at: str | None, cutoff: str) -> bool:
    return finished_at is not None and finished_at < cutoff


def decide_prune(
    runs: Iterable[RunInfo],
    backfills: Iterable[BackfillInfo],
    *,
    run_cutoff: str,
    backfill_cutoff: str | None = None,
    busy: frozenset[str] = frozenset(),
    count_in: frozenset[str] | None = None,
) -> PruneDecision:
    """The runs and backfills to remove from a closed universe.

    `run_cutoff` and `backfill_cutoff` are the same instant spelled as each table stores its
    timestamps (they may differ in format); `backfill_cutoff` defaults to `run_cutoff`. The
    `kept_*` counts cover only runs in `count_in` when given (a caller deciding overlapping
    universes counts each run once).
    """
    backfill_cutoff = run_cutoff if backfill_cutoff is None else backfill_cutoff
    runs = {r.run_id: r for r in runs}
    backfills = {b.backfill_id: b for b in backfills}

    candidate = {
        rid for rid, r in runs.items()
        if r.state in FINISHED_RUN_STATES and _old(r.finished_at, run_cutoff) and rid not in busy
    }
    counted = set(runs) if count_in is None else set(runs) & count_in
    kept_busy = sum(1 for rid in busy if rid in counted and runs[rid].state in FINISHED_RUN_STATES
                    and _old(runs[rid].finished_at, run_cutoff))
    kept: set[str] = set()

    def keep(run_id: str) -> None:
        # The run and its ancestors; a parent outside the universe is not ours to decide.
        while run_id in runs and run_id not in kept:
            kept.add(run_id)
            parent = runs[run_id].parent_run_id
            if parent is None:
                return
            run_id = parent

    for rid in runs:
        if rid not in candidate:
            keep(rid)
    after_lineage = set(kept)

    # Backfill families: all or nothing.
    families: dict[str, list[BackfillInfo]] = {}
    for b in backfills.values():
        families.setdefault(b.root_backfill_id, []).append(b)
    chunk_runs: dict[str, list[str]] = {}
    for rid, r in runs.items():
        if r.backfill_id is not None:
            chunk_runs.setdefault(r.backfill_id, []).append(rid)
    prunable_backfills: set[str] = set()
    for members in families.values():
        ids = {b.backfill_id for b in members}
        whole = all(b.state in FINISHED_BACKFILL_STATES and _old(b.finished_at, backfill_cutoff) for b in members)
        whole = whole and all(rid not in kept for bid in ids for rid in chunk_runs.get(bid, ()))
        if whole:
            prunable_backfills |= ids
    for bid, rids in chunk_runs.items():
        if bid not in prunable_backfills:  # includes a backfill the universe does not hold
            for rid in rids:
                keep(rid)

    pruned = frozenset(rid for rid in runs if rid not in kept)
    return PruneDecision(
        runs=pruned,
        backfills=frozenset(prunable_backfills),
        kept_busy=kept_busy,
        kept_lineage=len(after_lineage & candidate & counted),
        kept_backfill=len((kept - after_lineage) & candidate & counted),
    )


def run_event_keys(run_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The idempotency keys of the messages about one run: (exact keys, key prefixes).

    These are the keys the run pipeline derives from a run id (arcod.actors.run_messages):
    `queued:{run}`, `run-finished:{run}`, and `launch:`/`finished:`/`task:{run}:...`.
    """
    return (f"queued:{run_id}", f"run-finished:{run_id}"), (f"launch:{run_id}:", f"finished:{run_id}:", f"task:{run_id}:")
