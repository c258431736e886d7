"""The lifecycle of a run: its states, the events that move it, and when it is finished.

This file owns the run state machine and nothing else. `RUN_TRANSITIONS` is the truth: a
(state, event) pair that is not a key of the table is refused, and the docs diagram is
rendered from the same table, so the code, the tests and `docs/state-machines.md` cannot
disagree.

Two decisions worth knowing:

* Canceling a QUEUED run goes straight to CANCELED. Nothing of it is active, so there is
  nothing to wait for; a CANCELING state would only be a moment in which nothing can happen.
  A RUNNING run goes to CANCELING first, because its active tasks must be stopped and their
  attempts recorded before the run can honestly say it is over.
* A run that is CANCELING always ends CANCELED, even if every task it still had finished
  successfully in the meantime. The operator asked for a cancel; reporting SUCCEEDED would
  make `--wait` scripts believe the run completed on its own terms.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping

from arcod.core.errors import INVALID_TRANSITION, ArcodError
from arcod.core.task_state import TASK_TERMINAL_STATES, TaskState


class RunState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELING = "CANCELING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class RunEvent(enum.StrEnum):
    START = "start"  # the dispatcher took a slot for the run
    FINISH_SUCCESS = "finish_success"  # every task succeeded
    FINISH_FAILURE = "finish_failure"  # every task finished, at least one did not succeed
    CANCEL = "cancel"  # an operator (or the backfill controller) asked for a cancel
    ALL_STOPPED = "all_stopped"  # while canceling: no task is active any more


RUN_TRANSITIONS: dict[tuple[RunState, RunEvent], RunState] = {
    (RunState.QUEUED, RunEvent.START): RunState.RUNNING,
    (RunState.QUEUED, RunEvent.CANCEL): RunState.CANCELED,
    (RunState.RUNNING, RunEvent.FINISH_SUCCESS): RunState.SUCCEEDED,
    (RunState.RUNNING, RunEvent.FINISH_FAILURE): RunState.FAILED,
    (RunState.RUNNING, RunEvent.CANCEL): RunState.CANCELING,
    (RunState.CANCELING, RunEvent.ALL_STOPPED): RunState.CANCELED,
}

RUN_INITIAL_STATE = RunState.QUEUED
RUN_TERMINAL_STATES: frozenset[RunState] = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED}
)

# Asking to cancel a run that is already being canceled, or already is, is answered with
# success and no change: a retried `arcod cancel` must not look like a failure.
RUN_CANCEL_NOOP_STATES: frozenset[RunState] = frozenset({RunState.CANCELING, RunState.CANCELED})


def is_finished(state: RunState | str) -> bool:
    """True once the run can never change again (the states `--wait` waits for)."""
    return RunState(state) in RUN_TERMINAL_STATES


def allowed_run_events(state: RunState | str) -> list[RunEvent]:
    """The events the table accepts in `state`, in declaration order."""
    state = RunState(state)
    return [event for (from_state, event) in RUN_TRANSITIONS if from_state == state]


def apply_run_event(state: RunState | str, event: RunEvent | str) -> RunState:
    """The state after `event`, or `invalid_transition` if the table has no such edge."""
    state = RunState(state)
    try:
        return RUN_TRANSITIONS[(state, RunEvent(event))]
    except (KeyError, ValueError):
        allowed = [str(e) for e in allowed_run_events(state)]
        raise ArcodError(
            INVALID_TRANSITION,
            f"a {state} run cannot take {str(event)!r}; it accepts "
            + (", ".join(repr(e) for e in allowed) if allowed else "nothing, it is finished"),
            {"from": str(state), "event": str(event), "allowed": allowed},
        ) from None


def request_cancel(state: RunState | str) -> tuple[RunState, bool]:
    """Apply an operator's cancel: (new state, changed).

    Repeating a cancel is a success with changed=False; canceling a run that already
    SUCCEEDED or FAILED is refused, because it would rewrite how the run ended.
    """
    state = RunState(state)
    if state in RUN_CANCEL_NOOP_STATES:
        return state, False
    return apply_run_event(state, RunEvent.CANCEL), True


def run_outcome(
    task_states: Iterable[TaskState | str], *, canceling: bool = False
) -> RunState | None:
    """How a RUNNING (or, with `canceling`, a CANCELING) run ends, or None if it has not.

    A run is over when every task is terminal. Then it SUCCEEDED if every task did, and is
    FAILED otherwise -- skipped and canceled tasks count as not succeeded, because the
    assets they stand for were not materialised. A canceling run ends CANCELED whatever its
    tasks did. A run with no tasks is vacuously over (plans are never empty in practice:
    an empty selection is refused before planning).
    """
    return outcome_of_counts(Counter(TaskState(s) for s in task_states), canceling=canceling)


def outcome_of_counts(counts: Mapping[TaskState, int], *, canceling: bool = False) -> RunState | None:
    """`run_outcome` from the number of tasks in each state (what the dispatcher keeps)."""
    if any(n for state, n in counts.items() if state not in TASK_TERMINAL_STATES):
        return None
    if canceling:
        return RunState.CANCELED
    if any(n for state, n in counts.items() if state != TaskState.SUCCEEDED):
        return RunState.FAILED
    return RunState.SUCCEEDED


def outcome_event(outcome: RunState) -> RunEvent:
    """The event that moves a run into the `outcome` `run_outcome` decided."""
    return {
        RunState.SUCCEEDED: RunEvent.FINISH_SUCCESS,
        RunState.FAILED: RunEvent.FINISH_FAILURE,
        RunState.CANCELED: RunEvent.ALL_STOPPED,
    }[outcome]
