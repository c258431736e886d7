"""Partition status of an asset, from the history indexer's rows (SPEC §3). Pure.

The store keeps one `partition_status` row per (asset, partition) that ever started a task:
the last successful materialisation and the last task outcome, apart. A partition without a
row is MISSING. So everything here costs O(rows + page), never O(partitions): counts derive
MISSING as the size of the definition minus the located rows, the health bar buckets rows by
their position, and a page of MISSING partitions is found by walking the gaps between the
positions of the rows, generating keys only for the page.

The state of one partition, from its row:
- IN_PROGRESS: its last task outcome is RUNNING (a task for it is running, retries included);
- FAILED: its last task failed (retries exhausted), even if an older materialisation exists —
  the row still names that materialisation, so a failed retry never hides it;
- MATERIALIZED: otherwise, if it was ever materialised;
- MISSING: otherwise.
A canceled task is an operator's decision, not a data failure: it leaves the partition as its
materialisation history says (MATERIALIZED if it ever was, else MISSING), and the row still
shows the canceled attempt as the last one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from arcod.core.errors import ArcodError

MATERIALIZED = "MATERIALIZED"
FAILED = "FAILED"
IN_PROGRESS = "IN_PROGRESS"
MISSING = "MISSING"
STATES = (MATERIALIZED, FAILED, IN_PROGRESS, MISSING)

# Health bar: a bucket shows its worst member. A gap (MISSING) is worse than work under way.
SEVERITY = {MATERIALIZED: 0, IN_PROGRESS: 1, MISSING: 2, FAILED: 3}
HEALTH_WIDTH = 60


class StatusRow(msgspec.Struct, frozen=True, kw_only=True):
    """One `partition_status` row (partition '' for an unpartitioned asset)."""

    partition: str
    last_materialized_run: str | None = None
    last_materialized_at: str | None = None
    last_attempt_run: str | None = None
    last_attempt_state: str | None = None  # RUNNING | SUCCEEDED | FAILED | CANCELED
    last_attempt_at: str | None = None


def partition_state(row: StatusRow | None) -> str:
    """The status of one partition from its row (None: never started, MISSING)."""
    if row is None:
        return MISSING
    if row.last_attempt_state == "RUNNING":
        return IN_PROGRESS
    if row.last_attempt_state == "FAILED":
        return FAILED
    if row.last_materialized_at is not None:
        return MATERIALIZED
    return MISSING


class AssetStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The rows of one asset located in its definition, with counts per state.

    `positions` is sorted; `rows[i]` and `states[i]` belong to `positions[i]`. Rows whose key
    is not (or no longer) a partition of the definition — a removed dynamic key, a definition
    changed in the files — are counted in `outside` and take no part in anything else.
    """

    total: int
    positions: list[int]
    rows: list[StatusRow]
    states: list[str]
    counts: dict[str, int]
    outside: int


def positions_are_stable(defn: Any) -> bool:
    """True when a key's position does not depend on `as_of`, so positions may be memoised
    for the life of the definition value. Only a multi definition whose inner dimension grows
    with time moves its keys (row-major: the row width changes)."""
    if getattr(defn, "kind", None) != "multi":
        return True
    try:
        defn.size(None)
    except ValueError:
        return False
    return True


def locate(rows: Iterable[StatusRow], defn: Any, as_of: datetime | None,
           memo: dict[str, int] | None = None) -> AssetStatus:
    """Place each row at its position in `defn` (O(1) each) and count states.

    `as_of` bounds an open-ended definition (a row for a window not complete by then is
    outside); definitions that do not grow ignore it. `memo` is the caller's cache of
    key -> position (-1: not a key) for this very definition value; it is filled here and
    used only where `positions_are_stable(defn)`. An hourly `index` costs ~10 µs (parse and
    re-render of the key), so 100,000 rows cost a second once and milliseconds after.
    """
    total = defn.size(as_of)
    if memo is not None and not positions_are_stable(defn):
        memo = None
    located: list[tuple[int, StatusRow]] = []
    outside = 0
    for row in rows:
        position = None if memo is None else memo.get(row.partition)
        if position is None:
            position = _position(defn, row.partition, as_of if memo is None else None)
            if memo is not None:
                memo[row.partition] = position
        if not 0 <= position < total:
            outside += 1
            continue
        located.append((position, row))
    located.sort(key=lambda pair: pair[0])
    states = [partition_state(row) for _, row in located]
    counts = dict.fromkeys(STATES, 0)
    for state in states:
        counts[state] += 1
    counts[MISSING] += total - len(located)
    return AssetStatus(
        total=total, positions=[p for p, _ in located], rows=[r for _, r in located],
        states=states, counts=counts, outside=outside,
    )


def _position(defn: Any, key: str, as_of: datetime | None) -> int:
    """`key`'s position, -1 if it is not a key. Without `as_of` an open-ended time definition
    checks only the lower bound: the caller's check against the size is the upper one, which
    is what lets a memoised position stay right as time passes."""
    try:
        return defn.index(key, as_of)
    except ArcodError:
        return -1


def unpartitioned_status(row: StatusRow | None) -> AssetStatus:
    """The one "partition" of an unpartitioned asset (its row has partition '')."""
    state = partition_state(row)
    counts = dict.fromkeys(STATES, 0)
    counts[state] = 1
    rows = [row] if row is not None else []
    return AssetStatus(total=1, positions=[0] if rows else [], rows=rows,
                       states=[state] if rows else [], counts=counts, outside=0)


def health(status: AssetStatus, width: int = HEALTH_WIDTH) -> list[str]:
    """The worst state of each of `min(width, total)` equal slices of the definition.

    Partition i falls in bucket `i * w // total`; a bucket holds MISSING partitions when it
    has fewer located non-MISSING rows than members. O(rows + width).
    """
    total = status.total
    w = min(width, total)
    if w <= 0:
        return []
    worst = [MATERIALIZED] * w
    present = [0] * w
    for position, state in zip(status.positions, status.states):
        b = position * w // total
        if state != MISSING:
            present[b] += 1
        if SEVERITY[state] > SEVERITY[worst[b]]:
            worst[b] = state
    for b in range(w):
        size = -(-(b + 1) * total // w) - -(-b * total // w)  # ceil((b+1)N/w) - ceil(bN/w)
        if present[b] < size and SEVERITY[MISSING] > SEVERITY[worst[b]]:
            worst[b] = MISSING
    return worst


class PageEntry(msgspec.Struct, frozen=True):
    position: int
    row: StatusRow | None
    state: str


def page(status: AssetStatus, state: str | None, offset: int, limit: int) -> list[PageEntry]:
    """Entries [offset, offset + limit) of the partitions in `state` (all when None), in
    definition order. Keys are not generated here: the caller renders positions of the page
    with the definition (`key_range`/`key`), so a page costs O(limit + rows).
    """
    if state is None:
        return _all_page(status, offset, limit)
    if state == MISSING:
        return _missing_page(status, offset, limit)
    chosen = [(p, r) for p, r, s in zip(status.positions, status.rows, status.states) if s == state]
    return [PageEntry(p, r, state) for p, r in chosen[offset:offset + limit]]


def _all_page(status: AssetStatus, offset: int, limit: int) -> list[PageEntry]:
    low, high = min(offset, status.total), min(offset + limit, status.total)
    i = bisect_left(status.positions, low)
    out = []
    for position in range(low, high):
        if i < len(status.positions) and status.positions[i] == position:
            out.append(PageEntry(position, status.rows[i], status.states[i]))
            i += 1
        else:
            out.append(PageEntry(position, None, MISSING))
    return out


def _missing_page(status: AssetStatus, offset: int, limit: int) -> list[PageEntry]:
    """Walk the gaps between rows that are not MISSING; rows that are MISSING (a canceled
    first attempt) are members and keep their row. O(rows + limit)."""
    taken = [p for p, s in zip(status.positions, status.states) if s != MISSING]
    missing_rows = {p: r for p, r, s in zip(status.positions, status.rows, status.states) if s == MISSING}
    out: list[PageEntry] = []
    skip = offset
    start = 0
    for stop in [*taken, status.total]:
        gap = stop - start
        if gap > 0:
            if skip >= gap:
                skip -= gap
            else:
                first = start + skip
                skip = 0
                for position in range(first, min(stop, first + limit - len(out))):
                    out.append(PageEntry(position, missing_rows.get(position), MISSING))
                if len(out) >= limit:
                    return out
        start = stop + 1
    return out


def entry_dict(key: str | None, entry: PageEntry) -> dict[str, Any]:
    """One partition in the contract's field names."""
    row = entry.row
    return {
        "key": key,
        "state": entry.state,
        "last_materialized_at": row.last_materialized_at if row else None,
        "last_materialized_run": row.last_materialized_run if row else None,
        "last_attempt_state": row.last_attempt_state if row else None,
        "last_attempt_at": row.last_attempt_at if row else None,
        "last_attempt_run": row.last_attempt_run if row else None,
    }


def page_keys(defn: Any, positions: Sequence[int], as_of: datetime | None) -> list[str]:
    """Keys at `positions` (sorted), one `key_range` per contiguous run: O(len(positions))."""
    keys: list[str] = []
    i = 0
    while i < len(positions):
        j = i + 1
        while j < len(positions) and positions[j] == positions[j - 1] + 1:
            j += 1
        keys.extend(defn.key_range(positions[i], positions[j - 1] + 1, as_of))
        i = j
    return keys
