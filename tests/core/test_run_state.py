"""The run state machine: its table, its refusals, and when a run is over."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import INVALID_TRANSITION, ArcodError
from arcod.core.run_state import (
    RUN_INITIAL_STATE,
    RUN_TERMINAL_STATES,
    RUN_TRANSITIONS,
    RunEvent,
    RunState,
    allowed_run_events,
    apply_run_event,
    is_finished,
    outcome_event,
    request_cancel,
    run_outcome,
)
from arcod.core.task_state import TaskState

S, E = RunState, RunEvent

# SPEC §5 written out by hand, so a change to the table has to change this test too.
EXPECTED = {
    (S.QUEUED, E.START): S.RUNNING,
    (S.QUEUED, E.CANCEL): S.CANCELED,
    (S.RUNNING, E.FINISH_SUCCESS): S.SUCCEEDED,
    (S.RUNNING, E.FINISH_FAILURE): S.FAILED,
    (S.RUNNING, E.CANCEL): S.CANCELING,
    (S.CANCELING, E.ALL_STOPPED): S.CANCELED,
}


def test_table_is_the_spec():
    assert RUN_TRANSITIONS == EXPECTED
    assert RUN_INITIAL_STATE == S.QUEUED
    assert RUN_TERMINAL_STATES == {S.SUCCEEDED, S.FAILED, S.CANCELED}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(RunState, RunEvent)))
def test_every_pair_follows_the_table_or_is_refused(state, event):
    if (state, event) in EXPECTED:
        assert apply_run_event(state, event) == EXPECTED[(state, event)]
        assert apply_run_event(str(state), str(event)) == EXPECTED[(state, event)]
        return
    with pytest.raises(ArcodError) as info:
        apply_run_event(state, event)
    err = info.value
    assert err.code == INVALID_TRANSITION
    assert err.details == {
        "from": str(state),
        "event": str(event),
        "allowed": [str(e) for (s, e) in EXPECTED if s == state],
    }
    assert str(state) in err.message and str(event) in err.message


def test_unknown_event_is_an_invalid_transition():
    with pytest.raises(ArcodError) as info:
        apply_run_event(S.RUNNING, "explode")
    assert info.value.code == INVALID_TRANSITION
    assert info.value.details["allowed"] == ["finish_success", "finish_failure", "cancel"]


def test_terminal_states_have_no_way_out_and_the_rest_reach_one():
    for state in RunState:
        assert (allowed_run_events(state) == []) == (state in RUN_TERMINAL_STATES)
        assert is_finished(state) == (state in RUN_TERMINAL_STATES)
        assert is_finished(str(state)) == (state in RUN_TERMINAL_STATES)
    reachable = {RUN_INITIAL_STATE}
    frontier = [RUN_INITIAL_STATE]
    while frontier:
        state = frontier.pop()
        for event in allowed_run_events(state):
            nxt = apply_run_event(state, event)
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(RunState)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.QUEUED, (S.CANCELED, True)),
        (S.RUNNING, (S.CANCELING, True)),
        (S.CANCELING, (S.CANCELING, False)),
        (S.CANCELED, (S.CANCELED, False)),
    ],
)
def test_cancel_is_idempotent(state, expected):
    assert request_cancel(state) == expected


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.FAILED])
def test_cancel_of_a_run_that_ended_on_its_own_is_refused(state):
    with pytest.raises(ArcodError) as info:
        request_cancel(state)
    assert info.value.code == INVALID_TRANSITION
    assert info.value.details == {"from": str(state), "event": "cancel", "allowed": []}


ACTIVE = {TaskState.PENDING, TaskState.RUNNING}


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_run_outcome_over_every_combination_of_task_states(n):
    for combo in itertools.product(TaskState, repeat=n):
        if any(s in ACTIVE for s in combo):
            assert run_outcome(combo) is None
            assert run_outcome(combo, canceling=True) is None
            continue
        assert run_outcome(combo, canceling=True) == S.CANCELED
        if all(s == TaskState.SUCCEEDED for s in combo):
            assert run_outcome(combo) == S.SUCCEEDED
        else:
            assert run_outcome(combo) == S.FAILED


def test_run_outcome_examples():
    assert run_outcome(["SUCCEEDED", "SUCCEEDED"]) == S.SUCCEEDED
    assert run_outcome(["SUCCEEDED", "SKIPPED"]) == S.FAILED
    assert run_outcome(["SUCCEEDED", "CANCELED"]) == S.FAILED
    assert run_outcome(["SUCCEEDED", "RUNNING"]) is None
    assert run_outcome(["SUCCEEDED"], canceling=True) == S.CANCELED
    assert run_outcome(iter([TaskState.FAILED])) == S.FAILED  # any iterable, consumed once


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list(TaskState)), max_size=8), st.booleans(), st.randoms())
def test_run_outcome_ignores_order_and_its_event_leads_there(states, canceling, rnd):
    outcome = run_outcome(states, canceling=canceling)
    shuffled = list(states)
    rnd.shuffle(shuffled)
    assert run_outcome(shuffled, canceling=canceling) == outcome
    if outcome is not None:
        source = S.CANCELING if canceling else S.RUNNING
        assert apply_run_event(source, outcome_event(outcome)) == outcome
