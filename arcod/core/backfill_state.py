"""The lifecycle of a backfill and the versioned decision behind pause/resume/cancel.

This file owns the backfill state machine (`BACKFILL_TRANSITIONS`, SPEC §6's table exactly)
and `decide_transition`, the one place that turns a request plus the stored
(state, state_version) into "apply this, at this version" or a refusal. The controller
persists the decision and the transition log; it never decides.

Operators send `pause`, `resume` and `cancel`; the controller itself sends the other three
events once it has counted the chunks. A PAUSED backfill never finishes on its own, even if
its last active chunk runs end while it is paused: the table lets only RUNNING move to
SUCCEEDED or FAILED, so the operator sees the outcome after `resume`, not behind their back.

The order of checks in `decide_transition`, and why:

1. `expect_version` first. `--expect-version N` is a precondition in the sense of HTTP
   `If-Match`: "act only if nothing changed since I looked at version N". If the backfill
   moved on, the operator's picture is stale and they must be told so -- even when the
   request would now be a no-op. (Pause, resume and pause again by someone else ends in the
   state our operator asked for, at a version they never saw; answering "ok, unchanged"
   would hide that.) The SPEC words it unconditionally: "if the backfill is not at N the
   request is refused". A retried delivery of the *same* request does not rely on this
   rule: message idempotency keys replay the recorded answer (SPEC §8).
2. Then "already there": asking for the state the backfill is in succeeds with
   changed=False and the same version, so a repeated pause or cancel is harmless.
3. Then the table: an edge applies and the version grows by exactly one; anything else is
   `invalid_transition`.
"""

from __future__ import annotations

import enum

import msgspec

from arcod.core.errors import (
    BAD_REQUEST,
    EMPTY_SELECTION,
    INVALID_TRANSITION,
    NOT_FOUND,
    VERSION_CONFLICT,
    ArcodError,
)


class BackfillState(enum.StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class BackfillEvent(enum.StrEnum):
    # Operator requests.
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    # Decided by the backfill controller from chunk counts.
    ALL_CHUNKS_SUCCEEDED = "all_chunks_succeeded"
    ALL_CHUNKS_FINISHED_SOME_FAILED = "all_chunks_finished_some_failed"
    NO_ACTIVE_CHUNKS = "no_active_chunks"


OPERATOR_REQUESTS: frozenset[BackfillEvent] = frozenset(
    {BackfillEvent.PAUSE, BackfillEvent.RESUME, BackfillEvent.CANCEL}
)

BACKFILL_TRANSITIONS: dict[tuple[BackfillState, BackfillEvent], BackfillState] = {
    (BackfillState.RUNNING, BackfillEvent.PAUSE): BackfillState.PAUSED,
    (BackfillState.PAUSED, BackfillEvent.RESUME): BackfillState.RUNNING,
    (BackfillState.RUNNING, BackfillEvent.CANCEL): BackfillState.CANCELING,
    (BackfillState.PAUSED, BackfillEvent.CANCEL): BackfillState.CANCELING,
    (BackfillState.CANCELING, BackfillEvent.NO_ACTIVE_CHUNKS): BackfillState.CANCELED,
    (BackfillState.RUNNING, BackfillEvent.ALL_CHUNKS_SUCCEEDED): BackfillState.SUCCEEDED,
    (BackfillState.RUNNING, BackfillEvent.ALL_CHUNKS_FINISHED_SOME_FAILED): BackfillState.FAILED,
}

# For each event, the states in which it has already had its effect. Cancel is satisfied by
# CANCELING as well as CANCELED: the operator asked for the cancel, and it is under way.
ALREADY_THERE: dict[BackfillEvent, frozenset[BackfillState]] = {
    BackfillEvent.PAUSE: frozenset({BackfillState.PAUSED}),
    BackfillEvent.RESUME: frozenset({BackfillState.RUNNING}),
    BackfillEvent.CANCEL: frozenset({BackfillState.CANCELING, BackfillState.CANCELED}),
    BackfillEvent.ALL_CHUNKS_SUCCEEDED: frozenset({BackfillState.SUCCEEDED}),
    BackfillEvent.ALL_CHUNKS_FINISHED_SOME_FAILED: frozenset({BackfillState.FAILED}),
    BackfillEvent.NO_ACTIVE_CHUNKS: frozenset({BackfillState.CANCELED}),
}

BACKFILL_INITIAL_STATE = BackfillState.RUNNING
BACKFILL_INITIAL_VERSION = 1
BACKFILL_TERMINAL_STATES: frozenset[BackfillState] = frozenset(
    {BackfillState.CANCELED, BackfillState.SUCCEEDED, BackfillState.FAILED}
)

# retry-failed is offered only once a backfill can no longer change (SPEC §6).
RETRYABLE_BACKFILL_STATES: frozenset[BackfillState] = frozenset(
    {BackfillState.FAILED, BackfillState.CANCELED}
)


class TransitionDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What to persist: `changed` False means store nothing and answer with the current row."""

    changed: bool
    new_state: BackfillState
    new_version: int


def is_finished(state: BackfillState | str) -> bool:
    return BackfillState(state) in BACKFILL_TERMINAL_STATES


def allowed_backfill_events(state: BackfillState | str) -> list[BackfillEvent]:
    """The events the table accepts in `state`, in declaration order."""
    state = BackfillState(state)
    return [event for (from_state, event) in BACKFILL_TRANSITIONS if from_state == state]


def _event(name: BackfillEvent | str) -> BackfillEvent:
    try:
        return BackfillEvent(name)
    except ValueError:
        known = sorted(str(e) for e in BackfillEvent)
        raise ArcodError(
            BAD_REQUEST,
            f"{str(name)!r} is not a backfill request; use one of {', '.join(known)}",
            {"request": str(name), "known": known},
        ) from None


def backfill_not_found(backfill_id: str) -> ArcodError:
    """The one refusal for a backfill id nothing knows, whichever command named it."""
    return ArcodError(NOT_FOUND, f"no backfill {backfill_id!r}; see `arcod backfill list`",
                      {"what": "backfill", "id": backfill_id})


def finished_hint(state: BackfillState | str, retryable: bool | None = None) -> str:
    """What an operator can still do with a finished backfill.

    `retryable` says whether retry-failed would find anything (`partitions_to_retry` > 0);
    None means unknown, and then the state decides: a FAILED backfill always has something
    that did not succeed, a SUCCEEDED one never, a CANCELED one usually (what it did not run).
    """
    state = BackfillState(state)
    if retryable is None:
        retryable = state in RETRYABLE_BACKFILL_STATES
    if state == BackfillState.SUCCEEDED:
        return "it is finished and every partition succeeded; there is nothing left to do"
    if retryable:
        return "it is finished; use `arcod backfill retry-failed` to run what did not succeed"
    return "it is finished and nothing of it failed or is left unplanned; there is nothing to retry"


def apply_backfill_event(
    state: BackfillState | str, event: BackfillEvent | str, retryable: bool | None = None
) -> BackfillState:
    """The state after `event`, or `invalid_transition` if the table has no such edge
    (`retryable`: see `finished_hint`, which words the refusal for a finished backfill)."""
    state = BackfillState(state)
    event = _event(event)
    try:
        return BACKFILL_TRANSITIONS[(state, event)]
    except KeyError:
        allowed = [str(e) for e in allowed_backfill_events(state)]
        if allowed:
            hint = "it accepts " + ", ".join(repr(e) for e in allowed)
        else:
            hint = finished_hint(state, retryable)
        raise ArcodError(
            INVALID_TRANSITION,
            f"a {state} backfill cannot take {str(event)!r}; {hint}",
            {"from": str(state), "event": str(event), "allowed": allowed},
        ) from None


def check_retry_failed(backfill_id: str, state: BackfillState | str, partitions_left: int) -> None:
    """Refuse retry-failed unless the backfill is FAILED or CANCELED with something to retry.

    `partitions_left` is `backfill_chunks.partitions_to_retry` of its counters. A backfill
    that can still change is `invalid_transition` (saying how it gets to a retryable state),
    a SUCCEEDED one too (nothing failed: the table has no retry from there), a FAILED or
    CANCELED one with nothing left is `empty_selection`.
    """
    state = BackfillState(state)
    allowed = sorted(str(s) for s in RETRYABLE_BACKFILL_STATES)
    details = {"backfill_id": backfill_id, "state": str(state), "allowed": allowed}
    if state not in RETRYABLE_BACKFILL_STATES:
        if state == BackfillState.SUCCEEDED:
            why = "every partition succeeded, so there is nothing to retry"
        else:
            how = {
                BackfillState.RUNNING: f"wait for it to finish (`arcod backfill watch {backfill_id}`), "
                                       "or cancel it first",
                BackfillState.PAUSED: "resume it and wait for it to finish, or cancel it first",
                BackfillState.CANCELING: f"wait for the cancel to finish (`arcod backfill watch {backfill_id}`)",
            }[state]
            why = f"retry-failed takes a FAILED or CANCELED backfill; {how}"
        raise ArcodError(INVALID_TRANSITION, f"backfill {backfill_id} is {state}: {why}", details)
    if partitions_left <= 0:
        raise ArcodError(
            EMPTY_SELECTION,
            f"backfill {backfill_id} is {state}, but every partition it planned succeeded and none is "
            "left unplanned; there is nothing to retry",
            details,
        )


def decide_transition(
    state: BackfillState | str,
    version: int,
    target_request: BackfillEvent | str,
    expect_version: int | None,
    retryable: bool | None = None,
) -> TransitionDecision:
    """Decide a request against the stored (state, version); see the module docstring.
    `retryable` only words the refusal of a finished backfill (see `finished_hint`)."""
    state = BackfillState(state)
    event = _event(target_request)
    if expect_version is not None and expect_version != version:
        raise ArcodError(
            VERSION_CONFLICT,
            f"the backfill is at version {version} ({state}), not {expect_version}; "
            f"look at it again with `arcod backfill show` and retry with "
            f"--expect-version {version} if the request still makes sense",
            {"expected": expect_version, "actual": version, "state": str(state)},
        )
    if state in ALREADY_THERE[event]:
        return TransitionDecision(changed=False, new_state=state, new_version=version)
    new_state = apply_backfill_event(state, event, retryable)
    return TransitionDecision(changed=True, new_state=new_state, new_version=version + 1)
