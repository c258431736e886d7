"""The history indexer: per-(asset, partition) status, derived from task outcomes.

The dispatcher owns what runs *are*; this actor records what they *did* to the data: for
each (asset, partition) the last successful materialisation and the last attempt, kept
apart so that a failed retry never hides a good materialisation. Partition status
(MATERIALIZED, FAILED, IN_PROGRESS, MISSING) is read from these rows by
`arcod.core.partition_status`; a partition with no row is MISSING, which is why a
million-partition asset costs nothing until it runs.

`last_attempt_state` is the last task outcome: RUNNING when a task starts (it stays RUNNING
through its retries), then SUCCEEDED, FAILED (retries exhausted) or CANCELED. A task skipped
or canceled before it ever started leaves no trace: nothing was attempted on the data.

Messages are keyed by (run, task, state), so a duplicate changes nothing; out-of-order
deliveries are harmless because a row only moves forward in time (`last_attempt_at`).
"""

from __future__ import annotations

from typing import Any

from arcod.actors.run_messages import TaskChanged
from arcod.actors.runtime import Actor, Outcome
from arcod.store.database import Transaction


class HistoryIndexer(Actor):
    name = "history"
    accepts = (TaskChanged,)

    async def apply(self, tx: Transaction, msg: Any) -> Outcome:
        if not isinstance(msg, TaskChanged):
            raise TypeError(f"history indexer cannot handle {type(msg).__name__}")
        if msg.state in ("SKIPPED", "CANCELED") and msg.attempt == 0:
            return Outcome()
        partition = msg.partition or ""
        state = {"RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED"}.get(msg.state, "FAILED")
        if msg.state == "CANCELED":
            state = "CANCELED"
        await tx.execute(
            "INSERT INTO partition_status (asset, partition, last_attempt_run, last_attempt_state, last_attempt_at)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (asset, partition) DO UPDATE SET last_attempt_run = excluded.last_attempt_run,"
            " last_attempt_state = excluded.last_attempt_state, last_attempt_at = excluded.last_attempt_at"
            " WHERE partition_status.last_attempt_at IS NULL OR partition_status.last_attempt_at <= excluded.last_attempt_at",
            (msg.asset, partition, msg.run_id, state, msg.at))
        if msg.state == "SUCCEEDED":
            await tx.execute(
                "UPDATE partition_status SET last_materialized_run = ?, last_materialized_at = ?"
                " WHERE asset = ? AND partition = ? AND (last_materialized_at IS NULL OR last_materialized_at <= ?)",
                (msg.run_id, msg.at, msg.asset, partition, msg.at))
        return Outcome()
