"""The chunk dispatcher: decides which runs execute and which of their tasks start, and when.

It owns the run and task rows after planning. Every message it applies (a run was queued, an
attempt finished, a cancel was asked) ends with one dispatch pass in the same transaction:
1. admit QUEUED runs, oldest first, while fewer than `max_concurrent_runs` are RUNNING;
2. for each RUNNING run, start its ready tasks (core `ready_tasks`) up to
   `max_tasks_per_run`, except a task whose (asset, partition) is being materialised by
   another run: that one waits, and `waiting_for` names the run it waits for;
3. finish runs whose tasks are all terminal (core `run_outcome`).
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
from arcod.core.run_state import RunState, request_cancel, run_outcome
from arcod.core.task_state import TaskState, ready_tasks, tasks_to_skip
from arcod.store import runs as runs_store
from arcod.store.database import Transaction
from arcod.store.definitions_store import assets_decoder

log = structlog.get_logger("arcod.dispatcher")

DAEMON_RESTART = "daemon_restart"


class Dispatcher(Actor):
    name = "dispatcher"
    accepts = (RunQueued, DaemonStarted, CancelRun, AttemptFinished)

    def __init__(self, *, max_concurrent_runs: int, max_tasks_per_run: int, logs_dir: Path,
                 cancel_attempts: Any = None) -> None:
        self.max_concurrent_runs = max_concurrent_runs
        self.max_tasks_per_run = max_tasks_per_run
        self.logs_dir = logs_dir
        self.cancel_attempts = cancel_attempts  # callable(run_id) -> None, set by the executor
        self._plans: dict[str, Plan] = {}
        self._assets: dict[str, dict[str, AssetDef]] = {}

    # ── message handling ────────────────────────────────────────────────────

    async def apply(self, tx: Transaction, msg: Any) -> Outcome:
        out = Outcome()
        if isinstance(msg, AttemptFinished):
            await self._attempt_finished(tx, msg, out)
        elif isinstance(msg, CancelRun):
            out.reply = await self._cancel(tx, msg, out)
        elif not isinstance(msg, (RunQueued, DaemonStarted)):
            raise TypeError(f"dispatcher cannot handle {type(msg).__name__}")
        await self._dispatch(tx, out)
        return out

    async def _cancel(self, tx: Transaction, msg: CancelRun, out: Outcome) -> dict:
        row = await tx.fetch_one("SELECT state FROM runs WHERE run_id = ?", (msg.run_id,))
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
                out.send.append(("history", RunFinished(idem_key=f"run-finished:{msg.run_id}", run_id=msg.run_id,
                                                        state=str(new_state))))
        return {"run_id": msg.run_id, "state": str(new_state), "changed": changed}

    async def _cancel_pending(self, tx: Transaction, run_id: str, now: str, out: Outcome) -> None:
        await tx.execute(
            "UPDATE tasks SET state = 'CANCELED', finished_at = ? WHERE run_id = ? AND state = 'PENDING'",
            (now, run_id))

    async def _attempt_finished(self, tx: Transaction, msg: AttemptFinished, out: Outcome) -> None:
        attempt = await tx.fetch_one(
            "SELECT state, asset, partition FROM attempts WHERE run_id = ? AND task_id = ? AND attempt = ?",
            (msg.run_id, msg.task_id, msg.attempt))
        if attempt is None or attempt["state"] in ("SUCCEEDED", "FAILED"):
            return  # unknown or already recorded: nothing to do
        attempt_state = {"succeeded": "SUCCEEDED", "canceled": "CANCELED"}.get(msg.status, "FAILED")
        await tx.execute(
            "UPDATE attempts SET state = ?, exit_code = ?, reason = ?, finished_at = ?"
            " WHERE run_id = ? AND task_id = ? AND attempt = ?",
            (attempt_state, msg.exit_code, msg.reason, msg.finished_at, msg.run_id, msg.task_id, msg.attempt))
        task = await tx.fetch_one("SELECT state FROM tasks WHERE run_id = ? AND task_id = ?", (msg.run_id, msg.task_id))
        run = await tx.fetch_one("SELECT state, code_version, backfill_id FROM runs WHERE run_id = ?", (msg.run_id,))
        if task is None or task["state"] != TaskState.RUNNING:
            return
        asset, partition = attempt["asset"], attempt["partition"]
        if msg.status == "succeeded":
            await self._finish_task(tx, msg.run_id, msg.task_id, TaskState.SUCCEEDED, msg.finished_at, msg.attempt, asset, partition, out)
            return
        if run["state"] == RunState.CANCELING or msg.status == "canceled":
            await self._finish_task(tx, msg.run_id, msg.task_id, TaskState.CANCELED, msg.finished_at, msg.attempt, asset, partition, out)
            return
        policy = (await self._asset(tx, run["code_version"], asset)).retries
        counted = await tx.fetch_one(
            "SELECT COUNT(*) AS n FROM attempts WHERE run_id = ? AND task_id = ? AND state = 'FAILED'"
            " AND reason IS NOT ?", (msg.run_id, msg.task_id, DAEMON_RESTART))
        next_counted = counted["n"] + 1
        delay = 0.0 if msg.reason == DAEMON_RESTART else delay_before_attempt(policy, next_counted)
        if delay is not None:
            await self._schedule_attempt(tx, msg.run_id, msg.task_id, msg.attempt + 1, asset, partition, delay, out)
            return
        await self._finish_task(tx, msg.run_id, msg.task_id, TaskState.FAILED, msg.finished_at, msg.attempt, asset, partition, out)
        plan = await self._plan(tx, msg.run_id)
        states = await self._task_states(tx, msg.run_id)
        skips = tasks_to_skip(plan, states, msg.task_id)
        if skips:
            await tx.executemany(
                "UPDATE tasks SET state = 'SKIPPED', skipped_because = ?, finished_at = ? WHERE run_id = ? AND task_id = ?",
                [(cause, msg.finished_at, msg.run_id, tid) for tid, cause in skips.items()])

    async def _finish_task(self, tx: Transaction, run_id: str, task_id: str, state: TaskState, at: str,
                           attempt: int, asset: str, partition: str | None, out: Outcome) -> None:
        await tx.execute(
            "UPDATE tasks SET state = ?, finished_at = ?, waiting_for = NULL WHERE run_id = ? AND task_id = ?",
            (str(state), at, run_id, task_id))
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
        await tx.execute("UPDATE tasks SET attempts = ? WHERE run_id = ? AND task_id = ?", (attempt, run_id, task_id))
        out.send.append(("executor", LaunchAttempt(idem_key=launch_key(run_id, task_id, attempt),
                                                   run_id=run_id, task_id=task_id, attempt=attempt)))

    # ── the dispatch pass ───────────────────────────────────────────────────

    async def _dispatch(self, tx: Transaction, out: Outcome) -> None:
        running = [r["run_id"] for r in await tx.fetch_all("SELECT run_id FROM runs WHERE state = 'RUNNING' ORDER BY seq")]
        free = self.max_concurrent_runs - len(running)
        if free > 0:
            queued = await tx.fetch_all("SELECT run_id FROM runs WHERE state = 'QUEUED' ORDER BY seq LIMIT ?", (free,))
            now = runs_store.now_iso()
            for row in queued:
                await tx.execute("UPDATE runs SET state = 'RUNNING', started_at = ? WHERE run_id = ?", (now, row["run_id"]))
                running.append(row["run_id"])
        busy = {(r["asset"], r["partition"]): r["run_id"] for r in await tx.fetch_all(
            "SELECT run_id, asset, partition FROM tasks WHERE state = 'RUNNING'")}
        for run_id in running:
            await self._start_ready(tx, run_id, busy, out)
        for row in await tx.fetch_all(
                "SELECT run_id, state, backfill_id FROM runs WHERE state IN ('RUNNING', 'CANCELING')"):
            states = await self._task_states(tx, row["run_id"])
            outcome = run_outcome(states.values(), canceling=row["state"] == RunState.CANCELING)
            if outcome is not None:
                await tx.execute("UPDATE runs SET state = ?, finished_at = ? WHERE run_id = ?",
                                 (str(outcome), runs_store.now_iso(), row["run_id"]))
                self._plans.pop(row["run_id"], None)
                finished = RunFinished(idem_key=f"run-finished:{row['run_id']}", run_id=row["run_id"],
                                       state=str(outcome), backfill_id=row["backfill_id"])
                out.send.append(("history", finished))
                log.info("run finished", run_id=row["run_id"], state=str(outcome))

    async def _start_ready(self, tx: Transaction, run_id: str, busy: dict, out: Outcome) -> None:
        states = await self._task_states(tx, run_id)
        active = sum(1 for s in states.values() if s == TaskState.RUNNING)
        if active >= self.max_tasks_per_run:
            return
        plan = await self._plan(tx, run_id)
        by_id = {t.task_id: t for t in plan.tasks}
        now = runs_store.now_iso()
        for task_id in ready_tasks(plan, states):
            if active >= self.max_tasks_per_run:
                break
            task = by_id[task_id]
            holder = busy.get((task.asset, task.partition))
            if holder is not None and holder != run_id:
                await tx.execute("UPDATE tasks SET waiting_for = ? WHERE run_id = ? AND task_id = ?",
                                 (holder, run_id, task_id))
                continue
            await tx.execute(
                "UPDATE tasks SET state = 'RUNNING', started_at = ?, waiting_for = NULL WHERE run_id = ? AND task_id = ?",
                (now, run_id, task_id))
            busy[(task.asset, task.partition)] = run_id
            active += 1
            await self._schedule_attempt(tx, run_id, task_id, 1, task.asset, task.partition, 0.0, out)
            out.send.append(("history", TaskChanged(
                idem_key=f"task:{run_id}:{task_id}:RUNNING", run_id=run_id, task_id=task_id, asset=task.asset,
                partition=task.partition, state="RUNNING", attempt=1, at=now)))

    # ── cached immutable inputs ─────────────────────────────────────────────

    async def _plan(self, tx: Transaction, run_id: str) -> Plan:
        plan = self._plans.get(run_id)
        if plan is None:
            row = await tx.fetch_one("SELECT plan FROM runs WHERE run_id = ?", (run_id,))
            plan = self._plans[run_id] = runs_store.plan_decoder.decode(row["plan"])
        return plan

    async def _task_states(self, tx: Transaction, run_id: str) -> dict[str, str]:
        rows = await tx.fetch_all("SELECT task_id, state FROM tasks WHERE run_id = ?", (run_id,))
        return {r["task_id"]: r["state"] for r in rows}

    async def _asset(self, tx: Transaction, code_version: str, asset: str) -> AssetDef:
        assets = self._assets.get(code_version)
        if assets is None:
            row = await tx.fetch_one("SELECT assets FROM code_versions WHERE code_version = ?", (code_version,))
            assets = self._assets[code_version] = assets_decoder.decode(row["assets"])
        return assets[asset]
