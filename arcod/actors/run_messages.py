"""Messages of the run pipeline: planner -> dispatcher -> executor -> dispatcher -> history.

Every message's `idem_key` is derived from what it is about, never random, so a message
re-sent after a crash or delivered twice carries the same key and is applied once:
`queued:{run}`, `launch:{run}:{task}:{attempt}`, `finished:{run}:{task}:{attempt}`, ...
Requests that come from operators (PlanRun, CancelRun) carry the request's own id.
"""

from __future__ import annotations

from arcod.actors.messages import Message


class PlanRun(Message, frozen=True, kw_only=True):
    select: tuple[str, ...]
    upstream: int | None = None
    downstream: int | None = None
    partition: str | None = None
    partitions: str | None = None
    run_key: str | None = None
    tags: dict[str, str] = {}


class PlanRerun(Message, frozen=True, kw_only=True):
    parent_run_id: str
    kind: str  # from_failure | subset | all
    select: tuple[str, ...] = ()
    upstream: int | None = None
    downstream: int | None = None
    run_key: str | None = None


class RunQueued(Message, frozen=True, kw_only=True):
    run_id: str


class DaemonStarted(Message, frozen=True, kw_only=True):
    """The dispatcher's first message after every start: look at every run and resume."""


class CancelRun(Message, frozen=True, kw_only=True):
    run_id: str


class LaunchAttempt(Message, frozen=True, kw_only=True):
    run_id: str
    task_id: str
    attempt: int


class AttemptFinished(Message, frozen=True, kw_only=True):
    run_id: str
    task_id: str
    attempt: int
    status: str  # succeeded | failed | timed_out | canceled
    reason: str
    exit_code: int | None = None
    finished_at: str


class TaskChanged(Message, frozen=True, kw_only=True):
    """Sent to the history indexer whenever a task starts an attempt or finishes."""

    run_id: str
    task_id: str
    asset: str
    partition: str | None
    state: str  # RUNNING | SUCCEEDED | FAILED | SKIPPED | CANCELED
    attempt: int
    at: str


class RunFinished(Message, frozen=True, kw_only=True):
    run_id: str
    state: str
    backfill_id: str | None = None


def finished_key(run_id: str, task_id: str, attempt: int) -> str:
    return f"finished:{run_id}:{task_id}:{attempt}"


def launch_key(run_id: str, task_id: str, attempt: int) -> str:
    return f"launch:{run_id}:{task_id}:{attempt}"
