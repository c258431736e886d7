"""The chunk dispatcher: decides which runs execute and which of their tasks start, and when.

It owns the run and task rows after planning. Every message it applies (a run was queued, an
attempt finished, a cancel was asked) ends with one dispatch pass in the same transaction:
1. admit QUEUED runs, oldest first, while fewer than `max_concurrent_runs` are RUNNING;
2. for each RUNNING run, start its ready tasks up to `max_tasks_per_run`, except a task whose
   (asset, partition) is being materialised by another run: that one waits, and
   `waiting_for` names the run it waits for;
3. finish runs whose tasks are all terminal.
Ready tasks, outcomes and skips come from one core `RunProgress` per active run, kept in
memory so a message costs what it changes, not the size of its run. The memory copy is
trusted only while its version equals the run's stored `tasks_version`, checked once per
transaction: every transaction that changes task states moves that number with them, so a
transaction that rolled back (or another daemon's) leaves a copy that no longer matches and
is read again from the tasks table.
Starting a task means inserting its attempt row (SCHEDULED) and sending `LaunchAttempt` to
the executor; the executor turns it into a process. Attempt numbers are part of the message
key, so no attempt is ever started twice.

Retries follow the asset's policy of the run's code_version. An attempt that failed because
the daemon died under it (`daemon_restart`) is recorded as failed but does not use up the
retry budget: the restart is the daemon's fault, not the task's, and a crash must not change
a run's final state (SPEC §8).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

from arcod.actors.run_messages import (
    AttemptFinished,
    CancelRun,
    DaemonStarted,
    LaunchAttempt,
    RunFinished,
    RunQueued,
    TaskChanged,
    launch_key,
)
from arcod.actors.runtime import Actor, Outcome
from arcod.core import errors
from arcod.core.definitions import AssetDef
from arcod.core.errors import ArcodError
from arcod.core.paths import attempt_log_path
from arcod.core.plan import Plan
from arcod.core.retry import delay_before_attempt
from arcod.core.run_progress import RunProgress
from arcod.core.run_state import RunState, request_cancel
from arcod.core.task_state import TaskState
from arcod.store import runs as runs_store
from arcod.store.database import Transaction
from arcod.store.definitions_store import AssetsByCodeVersion

log = structlog.get_logger("arcod.dispatcher")

DAEMON_RESTART = "daemon_restart"


def announce_finished(out: Outcome, run_id: str, state: str, backfill_id: str | None) -> None:
    """Tell the backfill controller a chunk run ended; it plans the next chunk on this event.
    (Run history needs no message: the run row itself is the record.)"""
    if backfill_id is not None:
        out.send.append(("backfill", RunFinished(idem_key=f"run-finished:{run_id}", run_id=run_id,
                                                 state=state, backfill_id=backfill_id)))


class _Held:
    """A run's progress, and the transactions that last checked it and last moved its version."""

    __slots__ = ("progress", "checked_in", "moved_in")

    def __init__(self, progress: RunProgress) -> None:
        self.progress = progress
        self.checked_in: Transaction | None = None
        self.moved_in: Transaction | None = None


class Dispatcher(Actor):
    name = "dispatcher"
    accepts = (RunQueued, DaemonStarted, CancelRun, AttemptFinished)

    def __init__(self, *, max_concurrent_runs: int, max_tasks_per_run: int, logs_dir: Path,
                 cancel_attempts: Any = None) -> None:
        self.max_concurrent_runs = max_concurrent_runs
        self.max_tasks_per_run = max_tasks_per_run
        self.logs_dir = logs_dir
        self.cancel_attempts = cancel_attempts  # callable(run_id) -> None, set by the executor
        self.draining = False  # set on shutdown: admit no run and start no task until the next start
        self._runs: dict[str, _Held] = {}  # active runs' progress, see the module docstring
        self._assets = AssetsByCodeVersion()

    # ── message handling ────────────────────────────────────────────────────

    async def apply(self, tx: Transaction, msg: Any) -> Outcome:
        out = Outcome()
        focus: list[str] | None = None  # None: every active run (after a start)
        if isinstance(msg, AttemptFinished):
            await self._attempt_finished(tx, msg, out)
            focus = [msg.run_id]
        elif isinstance(msg, CancelRun):
            out.reply = await self._cancel(tx, msg, out)
            focus = [msg.run_id]
        elif isinstance(msg, RunQueued):
            focus = [msg.run_id]
        elif not isinstance(msg, DaemonStarted):
            raise TypeError(f"dispatcher cannot handle {type(msg).__name__}")
        await self._dispatch(tx, out, focus)
        return out

    async def _cancel(self, tx: Transaction, msg: CancelRun, out: Outcome) -> dict:
        row = await tx.fetch_one("SELECT state, backfill_id FROM runs WHERE run_id = ?", (msg.run_id,))
        if row is None:
            raise ArcodError(errors.NOT_FOUND, f"no run {msg.run_id!r}; see `arcod runs list`",
                             {"what": "run", "id": msg.run_id})
        new_state, changed = request_cancel(row["state"])
        if changed:
            now = runs_store.now_iso()
            await tx.execute("UPDATE runs SET state = ? WHERE run_id = ?", (str(new_state), msg.run_id))
            await self._cancel_pending(tx, msg.run_id, now, out)
            if new_state == RunState.CANCELING:
                # Attempts are the executor's: it stops each one (waiting or running) and
                # reports it finished as canceled, which is what moves its task.
                run_id = msg.run_id
                if self.cancel_attempts is not None:
                    async def stop() -> None:
                        self.cancel_attempts(run_id)
                    out.after_commit.append(stop)
            else:
                await tx.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (now, msg.run_id))
                announce_finished(out, msg.run_id, str(new_state), row["backfill_id"])
        return {"run_id": msg.run_id, "state": str(new_state), "changed": changed}

    async def _cancel_pending(self, tx: Transaction, run_id: str, now: str, out: Outcome) -> None:
        progress = await self._progress(tx, run_id)  # before the write: it names what changes
        pending = [tid for tid, state in progress.states().items() if state == TaskState.PENDING]
        await tx.execute(
            "UPDATE tasks SET state = 'CANCELED', finished_at = ?, waiting_for = NULL WHERE run_id = ? AND state = 'PENDING'",
            (now, run_id))
        await self._record(tx, run_id, dict.fromkeys(pending, TaskState.CANCELED))

    async def _attempt_finished(self, tx: Transaction, msg: AttemptFinished, out: Outcome) -> None:
        attempt = await tx.fetch_one(
            "SELECT a.state, a.asset, a.partition, t.state AS task_state, r.state AS run_state, r.code_version"
            " FROM attempts a JOIN tasks t USING (run_id, task_id) JOIN runs r USING (run_id)"
            " WHERE a.run_id = ? AND a.task_id = ? AND a.attempt = ?",
            (msg.run_id, msg.task_id, msg.attempt))
        if attempt is None or attempt["state"] in ("SUCCEEDED", "FAILED"):
            return  # unknown or already recorded: nothing to do
        attempt_state = {"succeeded": "SUCCEEDED", "canceled": "CANCELED"}.get(msg.status, "FAILED")
        await tx.execute(
            "UPDATE attempts SET state = ?, exit_code = ?, reason = ?, finished_at = ?"
            " WHERE run_id = ? AND task_id = ? AND attempt = ?",
            (attempt_state, msg.exit_code, msg.reason, msg.finished_at, msg.run_id, msg.task_id, msg.attempt))
        if attempt["task_state"] != TaskState.RUNNING:
            return
        asset, partition = attempt["asset"], attempt["partition"]
        if msg.status == "succeeded":
            await self._finish_task(tx, msg.run_id, msg.task_id, TaskState.SUCCEEDED, msg.finished_at, msg.attempt, asset, partition, out)
            return
        if attempt["run_state"] == RunState.CANCELING or msg.status == "canceled":
            await self._finish_task(tx, msg.run_id, msg.task_id, TaskState.CANCELED, msg.finished_at, msg.attempt, asset, partition, out)
            return
        policy = (await self._asset(tx, attempt["code_version"], asset)).retries
        counted = await tx.fetch_one(
            "SELECT COUNT(*) AS n FROM attempts WHERE run_id = ? AND task_id = ? AND state = 'FAILED'"
            " AND reason IS NOT ?", (msg.run_id, msg.task_id, DAEMON_RESTART))
        next_counted = counted["n"] + 1
        delay = 0.0 if msg.reason == DAEMON_RESTART else delay_before_attempt(policy, next_counted)
        if delay is not None:
            await self._schedule_attempt(tx, msg.run_id, msg.task_id, msg.attempt + 1, asset, partition, delay, out)
            return
        await self._finish_task(tx, msg.run_id, msg.task_id, TaskState.FAILED, msg.finished_at, msg.attempt, asset, partition, out)
        skips = (await self._progress(tx, msg.run_id)).to_skip(msg.task_id)
        if skips:
            await tx.executemany(
                "UPDATE tasks SET state = 'SKIPPED', skipped_because = ?, finished_at = ?, waiting_for = NULL"
                " WHERE run_id = ? AND task_id = ?",
                [(cause, msg.finished_at, msg.run_id, tid) for tid, cause in skips.items()])
            await self._record(tx, msg.run_id, dict.fromkeys(skips, TaskState.SKIPPED))

    async def _finish_task(self, tx: Transaction, run_id: str, task_id: str, state: TaskState, at: str,
                           attempt: int, asset: str, partition: str | None, out: Outcome) -> None:
        await tx.execute(
            "UPDATE tasks SET state = ?, finished_at = ?, waiting_for = NULL WHERE run_id = ? AND task_id = ?",
            (str(state), at, run_id, task_id))
        await self._record(tx, run_id, {task_id: state})
        out.send.append(("history", TaskChanged(
            idem_key=f"task:{run_id}:{task_id}:{state}", run_id=run_id, task_id=task_id, asset=asset,
            partition=partition, state=str(state), attempt=attempt, at=at)))

    async def _schedule_attempt(self, tx: Transaction, run_id: str, task_id: str, attempt: int, asset: str,
                                partition: str | None, delay_s: float, out: Outcome) -> None:
        now = datetime.now(timezone.utc)
        not_before = (now + timedelta(seconds=delay_s)).isoformat(timespec="milliseconds")
        log_path = attempt_log_path(self.logs_dir, run_id, task_id, attempt)
        await tx.execute(
            "INSERT INTO attempts (run_id, task_id, attempt, asset, partition, state, not_before, log_path)"
            " VALUES (?, ?, ?, ?, ?, 'SCHEDULED', ?, ?)",
            (run_id, task_id, attempt, asset, partition, not_before, str(log_path)))
        if attempt > 1:  # the first attempt's count is set when the task starts
            await tx.execute("UPDATE tasks SET attempts = ? WHERE run_id = ? AND task_id = ?", (attempt, run_id, task_id))
        out.send.append(("executor", LaunchAttempt(idem_key=launch_key(run_id, task_id, attempt),
                                                   run_id=run_id, task_id=task_id, attempt=attempt)))

    # ── the dispatch pass ───────────────────────────────────────────────────

    async def _dispatch(self, tx: Transaction, out: Outcome, focus: list[str] | None) -> None:
        """Admit queued runs, start ready tasks, finish finished runs.

        Only the runs a message concerns are looked at (`focus`), plus runs it admits and runs
        with a task waiting for a partition another run held; `None` means every active run.
        A run that finishes frees a slot, so admission repeats until nothing changes.
        """
        if focus is None:
            candidates = [r["run_id"] for r in await tx.fetch_all(
                "SELECT run_id FROM runs WHERE state IN ('RUNNING', 'CANCELING') ORDER BY seq")]
        else:
            candidates = list(focus) + [r["run_id"] for r in await tx.fetch_all(
                "SELECT DISTINCT t.run_id FROM runs r JOIN tasks t ON t.run_id = r.run_id"
                " WHERE r.state = 'RUNNING' AND t.state = 'PENDING' AND t.waiting_for IS NOT NULL")]
        busy = {(r["asset"], r["partition"]): r["run_id"] for r in await tx.fetch_all(
            "SELECT run_id, asset, partition FROM tasks WHERE state = 'RUNNING'")}
        while True:
            candidates += await self._admit(tx)
            finished = 0
            for run_id in dict.fromkeys(candidates):
                finished += await self._advance(tx, run_id, busy, out)
            candidates = []
            if not finished or self.draining:
                return

    async def _admit(self, tx: Transaction) -> list[str]:
        """Move the oldest QUEUED runs to RUNNING while fewer than `max_concurrent_runs` are active."""
        if self.draining:
            return []
        # A CANCELING run still has processes stopping: it keeps its slot until it is CANCELED.
        row = await tx.fetch_one("SELECT COUNT(*) AS n FROM runs WHERE state IN ('RUNNING', 'CANCELING')")
        free = self.max_concurrent_runs - row["n"]
        if free <= 0:
            return []
        queued = [r["run_id"] for r in await tx.fetch_all(
            "SELECT run_id FROM runs WHERE state = 'QUEUED' ORDER BY seq LIMIT ?", (free,))]
        now = runs_store.now_iso()
        for run_id in queued:
            await tx.execute("UPDATE runs SET state = 'RUNNING', started_at = ? WHERE run_id = ?", (now, run_id))
        return queued

    async def _advance(self, tx: Transaction, run_id: str, busy: dict, out: Outcome) -> int:
        """Start what is ready in one run and finish it if it is done; 1 if it finished."""
        row = await tx.fetch_one("SELECT state, backfill_id, tasks_version FROM runs WHERE run_id = ?", (run_id,))
        if row is None or row["state"] not in (RunState.RUNNING, RunState.CANCELING):
            self._runs.pop(run_id, None)
            return 0
        progress = await self._progress(tx, run_id, row["tasks_version"])
        if row["state"] == RunState.RUNNING and not self.draining:
            await self._start_ready(tx, run_id, progress, busy, out)
        outcome = progress.outcome(canceling=row["state"] == RunState.CANCELING)
        if outcome is None:
            return 0
        await tx.execute("UPDATE runs SET state = ?, finished_at = ? WHERE run_id = ?",
                         (str(outcome), runs_store.now_iso(), run_id))
        self._runs.pop(run_id, None)
        announce_finished(out, run_id, str(outcome), row["backfill_id"])
        log.info("run finished", run_id=run_id, state=str(outcome))
        return 1

    async def _start_ready(self, tx: Transaction, run_id: str, progress: RunProgress, busy: dict,
                           out: Outcome) -> None:
        """Start ready tasks, in plan order, up to the run's parallelism."""
        now = runs_store.now_iso()
        waiting: set[str] = set()  # ready, but their partition is another run's for now
        while (slots := self.max_tasks_per_run - progress.counts[TaskState.RUNNING]) > 0:
            candidates = progress.ready(slots, exclude=waiting)
            if not candidates:
                return
            for task_id in candidates:
                task = progress.task(task_id)
                holder = busy.get((task.asset, task.partition))
                if holder is not None and holder != run_id:
                    await tx.execute("UPDATE tasks SET waiting_for = ? WHERE run_id = ? AND task_id = ?",
                                     (holder, run_id, task_id))
                    waiting.add(task_id)
                    continue
                await self._start_task(tx, run_id, task_id, task.asset, task.partition, now, out)
                busy[(task.asset, task.partition)] = run_id

    async def _start_task(self, tx: Transaction, run_id: str, task_id: str, asset: str, partition: str | None,
                          now: str, out: Outcome) -> None:
        await tx.execute(
            "UPDATE tasks SET state = 'RUNNING', started_at = ?, waiting_for = NULL, attempts = 1"
            " WHERE run_id = ? AND task_id = ?",
            (now, run_id, task_id))
        await self._record(tx, run_id, {task_id: TaskState.RUNNING})
        await self._schedule_attempt(tx, run_id, task_id, 1, asset, partition, 0.0, out)
        out.send.append(("history", TaskChanged(
            idem_key=f"task:{run_id}:{task_id}:RUNNING", run_id=run_id, task_id=task_id, asset=asset,
            partition=partition, state="RUNNING", attempt=1, at=now)))

    # ── each active run's progress ──────────────────────────────────────────

    async def _progress(self, tx: Transaction, run_id: str, stored_version: int | None = None) -> RunProgress:
        """The run's progress, checked against its stored `tasks_version` once per transaction
        (`stored_version`: the caller already read it) and read again if they differ."""
        held = self._runs.get(run_id)
        if held is not None and held.checked_in is tx:
            return held.progress
        if stored_version is None:
            row = await tx.fetch_one("SELECT tasks_version FROM runs WHERE run_id = ?", (run_id,))
            stored_version = row["tasks_version"]
        if held is None or held.progress.version != stored_version:
            plan = held.progress.plan if held is not None else await self._plan(tx, run_id)
            held = self._runs[run_id] = _Held(RunProgress(plan, await self._task_states(tx, run_id), stored_version))
        held.checked_in = tx
        return held.progress

    async def _record(self, tx: Transaction, run_id: str, changes: dict[str, TaskState]) -> None:
        """Mirror task state changes just written to the tasks table; the first change of a
        run in a transaction also moves its stored `tasks_version` (see the module docstring).

        The version moves even if the progress was read again after the write (and so already
        shows it): were the transaction to roll back, the copy would then show a change the
        table does not have, and only a version the table does not have either gives it away.
        """
        if not changes:
            return
        progress = await self._progress(tx, run_id)
        held = self._runs[run_id]
        if held.moved_in is not tx:
            # Before the copy changes: whatever happens next, it no longer claims the stored version.
            progress.version += 1
            held.moved_in = tx
            await tx.execute("UPDATE runs SET tasks_version = ? WHERE run_id = ?", (progress.version, run_id))
        for task_id, state in changes.items():
            progress.set(task_id, state)

    async def _plan(self, tx: Transaction, run_id: str) -> Plan:
        row = await tx.fetch_one("SELECT plan FROM runs WHERE run_id = ?", (run_id,))
        return runs_store.plan_decoder.decode(row["plan"])

    async def _task_states(self, tx: Transaction, run_id: str) -> dict[str, str]:
        rows = await tx.fetch_all("SELECT task_id, state FROM tasks WHERE run_id = ?", (run_id,))
        return {r["task_id"]: r["state"] for r in rows}

    async def _asset(self, tx: Transaction, code_version: str, asset: str) -> AssetDef:
        return await self._assets.get(tx, code_version, asset)
