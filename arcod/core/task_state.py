"""The lifecycle of one task of a run, and which tasks a state change unblocks or dooms.

This file owns the task state machine (`TASK_TRANSITIONS` is the truth, as in
`run_state`) and two pure questions asked of a plan: which tasks may start now
(`ready_tasks`) and which must be skipped because an upstream task failed (`tasks_to_skip`).

Retries live *inside* RUNNING. The SPEC names six task states and operators filter by them;
a seventh "waiting to retry" state would leak an executor detail into that vocabulary. An
attempt that fails with retries left is the `retry` event, a RUNNING -> RUNNING edge: the
task stays RUNNING (it still holds its place in the run and still blocks its downstream),
and the attempt itself is recorded by the store with its number and reason. Only when the
policy is exhausted does `fail` make the task FAILED.

A task missing from a `states` mapping is PENDING: the store may only hold rows for tasks
that have moved, and a task that never moved never started.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from arcod.core.errors import INVALID_TRANSITION, ArcodError
from arcod.core.plan import Plan


class TaskState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"


class TaskEvent(enum.StrEnum):
    START = "start"  # the first attempt was launched
    SUCCEED = "succeed"  # an attempt exited 0
    RETRY = "retry"  # an attempt failed and the retry policy allows another
    FAIL = "fail"  # an attempt failed and the retry policy is exhausted
    SKIP = "skip"  # an upstream task failed; this one can never run
    CANCEL = "cancel"  # the run is being canceled


TASK_TRANSITIONS: dict[tuple[TaskState, TaskEvent], TaskState] = {
    (TaskState.PENDING, TaskEvent.START): TaskState.RUNNING,
    (TaskState.PENDING, TaskEvent.SKIP): TaskState.SKIPPED,
    (TaskState.PENDING, TaskEvent.CANCEL): TaskState.CANCELED,
    (TaskState.RUNNING, TaskEvent.SUCCEED): TaskState.SUCCEEDED,
    (TaskState.RUNNING, TaskEvent.RETRY): TaskState.RUNNING,
    (TaskState.RUNNING, TaskEvent.FAIL): TaskState.FAILED,
    (TaskState.RUNNING, TaskEvent.CANCEL): TaskState.CANCELED,
}

TASK_INITIAL_STATE = TaskState.PENDING
TASK_TERMINAL_STATES: frozenset[TaskState] = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELED}
)


def allowed_task_events(state: TaskState | str) -> list[TaskEvent]:
    """The events the table accepts in `state`, in declaration order."""
    state = TaskState(state)
    return [event for (from_state, event) in TASK_TRANSITIONS if from_state == state]


def apply_task_event(state: TaskState | str, event: TaskEvent | str) -> TaskState:
    """The state after `event`, or `invalid_transition` if the table has no such edge."""
    state = TaskState(state)
    try:
        return TASK_TRANSITIONS[(state, TaskEvent(event))]
    except (KeyError, ValueError):
        allowed = [str(e) for e in allowed_task_events(state)]
        raise ArcodError(
            INVALID_TRANSITION,
            f"a {state} task cannot take {str(event)!r}; it accepts "
            + (", ".join(repr(e) for e in allowed) if allowed else "nothing, it is finished"),
            {"from": str(state), "event": str(event), "allowed": allowed},
        ) from None


def _state_of(states: Mapping[str, TaskState | str], task_id: str) -> TaskState:
    return TaskState(states.get(task_id, TaskState.PENDING))


def ready_tasks(plan: Plan, states: Mapping[str, TaskState | str]) -> list[str]:
    """PENDING tasks whose every dependency SUCCEEDED, in plan order.

    Plan order is topological with ties broken by task id, so launching in this order is
    deterministic and upstream-first when slots are scarce.
    """
    return [
        task.task_id
        for task in plan.tasks
        if _state_of(states, task.task_id) == TaskState.PENDING
        and all(_state_of(states, dep) == TaskState.SUCCEEDED for dep in task.deps)
    ]


def tasks_to_skip(
    plan: Plan, states: Mapping[str, TaskState | str], failed_task_id: str
) -> dict[str, str]:
    """Every PENDING task transitively downstream of `failed_task_id`, mapped to it.

    The value is the task whose failure caused the skip, which is what the run records
    (SPEC: "SKIPPED -- record which"). The walk goes through downstream tasks in any state:
    a PENDING task behind an already skipped or canceled one can never run either. Tasks
    not PENDING keep their state; a task already SKIPPED keeps the cause it was given first.
    """
    if not any(task.task_id == failed_task_id for task in plan.tasks):
        raise ValueError(f"task {failed_task_id!r} is not in the plan")
    seen = descendants(downstream_index(plan), failed_task_id)
    return {
        task.task_id: failed_task_id
        for task in plan.tasks
        if task.task_id in seen and _state_of(states, task.task_id) == TaskState.PENDING
    }


def downstream_index(plan: Plan) -> dict[str, list[str]]:
    """task id -> the tasks that depend on it directly, in plan order."""
    downstream: dict[str, list[str]] = {}
    for task in plan.tasks:
        for dep in task.deps:
            downstream.setdefault(dep, []).append(task.task_id)
    return downstream


def descendants(downstream: Mapping[str, Sequence[str]], root: str) -> set[str]:
    """Every task transitively downstream of `root` (not `root` itself)."""
    seen: set[str] = set()
    frontier = [root]
    while frontier:
        for child in downstream.get(frontier.pop(), ()):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return seen
