"""What a daemon does on start about attempts a previous daemon left unfinished.

An attempt whose LaunchAttempt was applied but whose end was never recorded belonged to a
daemon that died. Its process group (if it got as far as a process) is stopped, and an
`AttemptFinished` with reason `daemon_restart` is put in the dispatcher's outbox, which the
actor system delivers first thing; the dispatcher then retries it without charging the
retry budget. Attempts whose LaunchAttempt is still in the outbox are left alone: it will
be delivered again and launch them normally. Attempts whose real end is already in the
outbox are left alone too: that message tells the truth.

A process can exist before its pid is recorded (the daemon died between spawning it and
committing the pid). Such an attempt has no pid in the store, so its processes are found by
their environment instead: every live process started with the attempt's `ARCOD_RUN_ID`,
`ARCOD_ASSET` and `ARCOD_ATTEMPT` (read from /proc) has its group stopped. Without that, the
orphan would keep running next to the retry, and one partition would be written twice at once.
Groups are stopped concurrently, so N stubborn orphans cost one grace period, not N.
"""

from __future__ import annotations

import os

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
        "SELECT run_id, task_id, attempt, asset, pid FROM attempts WHERE state IN ('SCHEDULED', 'RUNNING')")
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
    if not orphans:
        return 0
    unrecorded = {_identity(row) for row in orphans if not row["pid"]}
    found = await anyio.to_thread.run_sync(_groups_by_identity, unrecorded) if unrecorded else {}

    async def stop(pgid: int, expect: dict[str, str]) -> None:
        # Only a group one of whose members carries this attempt's ids: a pid can be reused.
        try:
            await anyio.to_thread.run_sync(lambda: kill_process_group(pgid, term_grace_s, expect_env=expect))
        except ValueError as exc:
            log.error("not stopping a suspicious process group", pid=pgid, error=str(exc))

    async with anyio.create_task_group() as tg:
        for row in orphans:
            expect = {"ARCOD_RUN_ID": row["run_id"], "ARCOD_ATTEMPT": str(row["attempt"])}
            groups = {row["pid"]} if row["pid"] else found.get(_identity(row), set())
            for pgid in groups:
                tg.start_soon(stop, pgid, expect)
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


def _identity(row) -> tuple[str, str, str]:
    return (row["run_id"], row["asset"], str(row["attempt"]))


def _groups_by_identity(wanted: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], set[int]]:
    """Process groups of live processes whose environment names one of `wanted` attempts.

    Reads /proc/PID/environ (the environment a process was started with) and /proc/PID/stat
    (its group) of every process we may read; others' processes are unreadable and skipped.
    """
    found: dict[tuple[str, str, str], set[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found  # no /proc: nothing can be found this way
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        try:
            ident = (env[b"ARCOD_RUN_ID"].decode(), env[b"ARCOD_ASSET"].decode(), env[b"ARCOD_ATTEMPT"].decode())
        except (KeyError, UnicodeDecodeError):
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if ident in wanted and len(fields) >= 3 and fields[0] not in (b"Z", b"X"):
            found.setdefault(ident, set()).add(int(fields[2]))
    return found
