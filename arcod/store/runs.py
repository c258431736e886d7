"""Runs, tasks and attempts in SQLite: the rows the planner writes and the dispatcher moves.

Functions here are SQL and row shaping only; every decision (what may start, what a failure
skips, when a run is finished) is made in `arcod.core` by the actor that calls them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

from arcod.core.plan import Plan
from arcod.store.database import Database, Transaction


plan_decoder = msgspec.json.Decoder(Plan)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


async def insert_run(
    tx: Transaction,
    *,
    run_id: str,
    run_key: str | None,
    fingerprint: str,
    code_version: str,
    plan: Plan,
    request: Any,
    partition_selection: Any,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    root_run_id: str | None = None,
    rerun_kind: str | None = None,
    backfill_id: str | None = None,
    chunk_index: int | None = None,
) -> None:
    now = now_iso()
    await tx.execute(
        "INSERT INTO runs (run_id, run_key, state, fingerprint, code_version, parent_run_id, root_run_id,"
        " rerun_kind, backfill_id, chunk_index, request, partition_selection, tags, plan, created_at)"
        " VALUES (?, ?, 'QUEUED', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id, run_key, fingerprint, code_version, parent_run_id, root_run_id or run_id,
            rerun_kind, backfill_id, chunk_index, msgspec.json.encode(request),
            None if partition_selection is None else msgspec.json.encode(partition_selection),
            msgspec.json.encode(tags), msgspec.json.encode(plan), now,
        ),
    )
    await tx.executemany(
        "INSERT INTO tasks (run_id, task_id, position, asset, partition, state) VALUES (?, ?, ?, ?, ?, 'PENDING')",
        [(run_id, t.task_id, i, t.asset, t.partition) for i, t in enumerate(plan.tasks)],
    )


RUN_COLUMNS = (
    "run_id, run_key, state, fingerprint, code_version, parent_run_id, root_run_id, rerun_kind,"
    " backfill_id, chunk_index, tags, created_at, started_at, finished_at"
)


def run_row_to_dict(row: Any) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "run_key": row["run_key"],
        "state": row["state"],
        "fingerprint": row["fingerprint"],
        "code_version": row["code_version"],
        "parent_run_id": row["parent_run_id"],
        "root_run_id": row["root_run_id"],
        "rerun_kind": row["rerun_kind"],
        "backfill_id": row["backfill_id"],
        "chunk_index": row["chunk_index"],
        "tags": msgspec.json.decode(row["tags"]),
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


def task_row_to_dict(row: Any) -> dict[str, Any]:
    return {
        "task_id": row["task_id"],
        "asset": row["asset"],
        "partition": row["partition"],
        "state": row["state"],
        "attempts": row["attempts"],
        "skipped_because": row["skipped_because"],
        "waiting_for": row["waiting_for"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


async def run_with_tasks(reader: Database | Transaction, run_id: str) -> dict[str, Any] | None:
    fetch_one = reader.read_one if isinstance(reader, Database) else reader.fetch_one
    fetch_all = reader.read_all if isinstance(reader, Database) else reader.fetch_all
    row = await fetch_one(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
    if row is None:
        return None
    out = run_row_to_dict(row)
    tasks = await fetch_all(
        "SELECT task_id, asset, partition, state, attempts, skipped_because, waiting_for, started_at, finished_at"
        " FROM tasks WHERE run_id = ? ORDER BY position",
        (run_id,),
    )
    out["tasks"] = [task_row_to_dict(t) for t in tasks]
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    out["counts"] = counts
    return out
