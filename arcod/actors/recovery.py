"""What a daemon does on start about attempts a previous daemon left unfinished.

An attempt whose LaunchAttempt was applied but whose end was never recorded belonged to a
daemon that died. Its process group (if it got as far as a process) is stopped, and an
`AttemptFinished` with reason `daemon_restart` is put in the dispatcher's outbox, which the
actor system delivers first thing; the dispatcher then retries it without charging the
retry budget. Attempts whose LaunchAttempt is still in the outbox are left alone: it will
be delivered again and launch them normally. Attempts whose real end is already in the
outbox are left alone too: that message tells the truth.
"""

from __future__ import annotations

import anyio
import structlog

from arcod.actors.messages import encode_message, message_kind
from arcod.actors.run_messages import AttemptFinished, finished_key, launch_key
from arcod.executor.process import kill_process_group
from arcod.store import runs as runs_store
from arcod.store.database import Database

log = structlog.get_logger("arcod.recovery")

DAEMON_RESTART = "daemon_restart"


async def recover_orphaned_attempts(db: Database, *, term_grace_s: float) -> int:
    rows = await db.read_all(
        "SELECT run_id, task_id, attempt, pid FROM attempts WHERE state IN ('SCHEDULED', 'RUNNING')")
    orphans = []
    for row in rows:
        launched = await db.read_one(
            "SELECT 1 FROM events WHERE actor = 'executor' AND idem_key = ?",
            (launch_key(row["run_id"], row["task_id"], row["attempt"]),))
        reported = await db.read_one(
            "SELECT 1 FROM outbox WHERE target = 'dispatcher' AND idem_key = ?",
            (finished_key(row["run_id"], row["task_id"], row["attempt"]),))
        if launched is not None and reported is None:
            orphans.append(row)
    for row in orphans:
        if row["pid"]:
            # Only a group one of whose members carries this attempt's ids: a pid can be reused.
            expect = {"ARCOD_RUN_ID": row["run_id"], "ARCOD_ATTEMPT": str(row["attempt"])}
            try:
                await anyio.to_thread.run_sync(
                    lambda: kill_process_group(row["pid"], term_grace_s, expect_env=expect))
            except ValueError as exc:
                log.error("not stopping a suspicious process group", pid=row["pid"], error=str(exc))
    if not orphans:
        return 0
    now = runs_store.now_iso()
    async with db.transaction() as tx:
        for row in orphans:
            msg = AttemptFinished(
                idem_key=finished_key(row["run_id"], row["task_id"], row["attempt"]),
                run_id=row["run_id"], task_id=row["task_id"], attempt=row["attempt"],
                status="failed", reason=DAEMON_RESTART, exit_code=None, finished_at=now)
            await tx.execute(
                "INSERT INTO outbox (target, idem_key, kind, body, created_at) VALUES ('dispatcher', ?, ?, ?, ?)"
                " ON CONFLICT (target, idem_key) DO NOTHING",
                (msg.idem_key, message_kind(msg), encode_message(msg), now))
    log.warning("recovered attempts left by a previous daemon", attempts=len(orphans))
    return len(orphans)
