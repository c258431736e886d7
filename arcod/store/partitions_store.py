"""Dynamic partition keys and per-(asset, partition) status rows in SQLite.

Dynamic keys live in `dynamic_partitions` (definition, key, position): `position` grows with
every key added, so insertion order survives removals and restarts (the daemon binds the keys
into its definitions at start with `definitions_store.dynamic_keys`, ordered by position).
Status rows are the history indexer's; this module only reads them. SQL and row shaping only:
what a status means is `arcod.core.partition_status`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio

from arcod.core.partition_status import StatusRow
from arcod.store.database import Database, Transaction

T = TypeVar("T")

STATUS_COLUMNS = ("partition, last_materialized_run, last_materialized_at, last_attempt_run,"
                  " last_attempt_state, last_attempt_at")

# Runs whose PENDING or RUNNING tasks still need their partition to exist.
LIVE_RUN_STATES = ("QUEUED", "RUNNING", "CANCELING")


_SHAPE_ON_LOOP = 5_000


def status_row(row) -> StatusRow:
    return StatusRow(
        partition=row["partition"], last_materialized_run=row["last_materialized_run"],
        last_materialized_at=row["last_materialized_at"], last_attempt_run=row["last_attempt_run"],
        last_attempt_state=row["last_attempt_state"], last_attempt_at=row["last_attempt_at"],
    )


async def status_rows(db: Database, asset: str) -> list[StatusRow]:
    """Every status row of `asset`: one per partition that ever started a task."""
    rows = await db.read_all(f"SELECT {STATUS_COLUMNS} FROM partition_status WHERE asset = ?", (asset,))
    return await shape_rows(rows, status_row)


async def shape_rows(rows: Sequence[Any], shape: Callable[[Any], T]) -> list[T]:
    """`shape` applied to every row; a large result is shaped in a worker thread, since
    100,000 rows at ~1 µs each would hold the event loop for a tenth of a second."""
    if len(rows) < _SHAPE_ON_LOOP:
        return [shape(r) for r in rows]
    return await anyio.to_thread.run_sync(lambda: [shape(r) for r in rows])


async def stored_keys(tx: Transaction, definition: str) -> list[str]:
    rows = await tx.fetch_all(
        "SELECT key FROM dynamic_partitions WHERE definition = ? ORDER BY position", (definition,))
    return [r["key"] for r in rows]


async def all_dynamic_keys(tx: Transaction) -> dict[str, list[str]]:
    """Every dynamic definition's keys in insertion order, as this write transaction sees them."""
    keys: dict[str, list[str]] = {}
    for row in await tx.fetch_all("SELECT definition, key FROM dynamic_partitions ORDER BY definition, position"):
        keys.setdefault(row["definition"], []).append(row["key"])
    return keys


async def add_keys(tx: Transaction, definition: str, keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Append the keys not stored yet, in the order given: (added, already present)."""
    present = set(await stored_keys(tx, definition))
    added = [k for k in dict.fromkeys(keys) if k not in present]
    already = [k for k in dict.fromkeys(keys) if k in present]
    if added:
        row = await tx.fetch_one(
            "SELECT COALESCE(MAX(position), -1) AS last FROM dynamic_partitions WHERE definition = ?", (definition,))
        first = row["last"] + 1
        await tx.executemany(
            "INSERT INTO dynamic_partitions (definition, key, position) VALUES (?, ?, ?)",
            [(definition, key, first + i) for i, key in enumerate(added)])
    return added, already


async def remove_keys(tx: Transaction, definition: str, keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Delete the stored ones among `keys`: (removed, not present)."""
    present = set(await stored_keys(tx, definition))
    removed = [k for k in dict.fromkeys(keys) if k in present]
    absent = [k for k in dict.fromkeys(keys) if k not in present]
    if removed:
        await tx.executemany(
            "DELETE FROM dynamic_partitions WHERE definition = ? AND key = ?", [(definition, k) for k in removed])
    return removed, absent


async def live_tasks(tx: Transaction, assets: Sequence[str]) -> list[dict]:
    """PENDING or RUNNING tasks of `assets` in runs that are not finished: (run_id, asset, partition, state)."""
    if not assets:
        return []
    run_marks = ",".join("?" * len(LIVE_RUN_STATES))
    asset_marks = ",".join("?" * len(assets))
    rows = await tx.fetch_all(
        "SELECT t.run_id, t.asset, t.partition, t.state FROM runs r JOIN tasks t ON t.run_id = r.run_id"
        f" WHERE r.state IN ({run_marks}) AND t.state IN ('PENDING', 'RUNNING') AND t.asset IN ({asset_marks})",
        (*LIVE_RUN_STATES, *assets))
    return [dict(r) for r in rows]
