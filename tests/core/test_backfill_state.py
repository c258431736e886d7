"""The backfill state machine (SPEC §6) and the versioned decision behind pause/resume/cancel."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.backfill_state import (
    ALREADY_THERE,
    BACKFILL_INITIAL_STATE,
    BACKFILL_INITIAL_VERSION,
    BACKFILL_TERMINAL_STATES,
    BACKFILL_TRANSITIONS,
    OPERATOR_REQUESTS,
    BackfillEvent,
    BackfillState,
    TransitionDecision,
    allowed_backfill_events,
    apply_backfill_event,
    decide_transition,
    is_finished,
)
from arcod.core.errors import BAD_REQUEST, INVALID_TRANSITION, VERSION_CONFLICT, ArcodError

S, E = BackfillState, BackfillEvent

# SPEC §6's table, row by row.
EXPECTED = {
    (S.RUNNING, E.PAUSE): S.PAUSED,
    (S.PAUSED, E.RESUME): S.RUNNING,
    (S.RUNNING, E.CANCEL): S.CANCELING,
    (S.PAUSED, E.CANCEL): S.CANCELING,
    (S.CANCELING, E.NO_ACTIVE_CHUNKS): S.CANCELED,
    (S.RUNNING, E.ALL_CHUNKS_SUCCEEDED): S.SUCCEEDED,
    (S.RUNNING, E.ALL_CHUNKS_FINISHED_SOME_FAILED): S.FAILED,
}

# "Asking for the state the backfill is already in", written out by hand.
NOOPS = {
    (S.PAUSED, E.PAUSE),
    (S.RUNNING, E.RESUME),
    (S.CANCELING, E.CANCEL),
    (S.CANCELED, E.CANCEL),
    (S.SUCCEEDED, E.ALL_CHUNKS_SUCCEEDED),
    (S.FAILED, E.ALL_CHUNKS_FINISHED_SOME_FAILED),
    (S.CANCELED, E.NO_ACTIVE_CHUNKS),
}


def test_table_is_the_spec():
    assert BACKFILL_TRANSITIONS == EXPECTED
    assert {(s, e) for e, states in ALREADY_THERE.items() for s in states} == NOOPS
    assert BACKFILL_INITIAL_STATE == S.RUNNING and BACKFILL_INITIAL_VERSION == 1
    assert BACKFILL_TERMINAL_STATES == {S.CANCELED, S.SUCCEEDED, S.FAILED}
    assert OPERATOR_REQUESTS == {E.PAUSE, E.RESUME, E.CANCEL}


def test_terminal_states_are_exactly_those_without_events():
    for state in BackfillState:
        assert (allowed_backfill_events(state) == []) == (state in BACKFILL_TERMINAL_STATES)
        assert is_finished(state) == (state in BACKFILL_TERMINAL_STATES)


def test_an_applied_event_lands_where_repeating_it_is_a_noop():
    """Why a duplicate delivery applies once: every edge's target satisfies its own event."""
    for (_, event), target in EXPECTED.items():
        assert target in ALREADY_THERE[event]


@pytest.mark.parametrize(("state", "event"), list(itertools.product(BackfillState, BackfillEvent)))
def test_every_pair_follows_the_table_or_is_refused(state, event):
    if (state, event) in EXPECTED:
        assert apply_backfill_event(state, event) == EXPECTED[(state, event)]
        assert apply_backfill_event(str(state), str(event)) == EXPECTED[(state, event)]
        return
    with pytest.raises(ArcodError) as info:
        apply_backfill_event(state, event)
    assert info.value.code == INVALID_TRANSITION
    assert info.value.details == {
        "from": str(state),
        "event": str(event),
        "allowed": [str(e) for (s, e) in EXPECTED if s == state],
    }


CASES = list(itertools.product(BackfillState, BackfillEvent, ["none", "same", "older", "newer"]))


@pytest.mark.parametrize(("state", "request_", "expect"), CASES)
def test_decide_transition_for_every_state_request_and_expectation(state, request_, expect):
    version = 7
    expect_version = {"none": None, "same": 7, "older": 6, "newer": 8}[expect]
    if expect in ("older", "newer"):
        with pytest.raises(ArcodError) as info:
            decide_transition(state, version, request_, expect_version)
        assert info.value.code == VERSION_CONFLICT
        assert info.value.details["expected"] == expect_version
        assert info.value.details["actual"] == version
        assert "--expect-version 7" in info.value.message
        return
    if (state, request_) in NOOPS:
        expected = TransitionDecision(changed=False, new_state=state, new_version=version)
        assert decide_transition(state, version, request_, expect_version) == expected
    elif (state, request_) in EXPECTED:
        expected = TransitionDecision(
            changed=True, new_state=EXPECTED[(state, request_)], new_version=version + 1
        )
        assert decide_transition(state, version, request_, expect_version) == expected
    else:
        with pytest.raises(ArcodError) as info:
            decide_transition(state, version, request_, expect_version)
        assert info.value.code == INVALID_TRANSITION
        assert info.value.details["from"] == str(state)


def test_a_stale_version_is_a_conflict_even_when_the_request_is_a_noop():
    with pytest.raises(ArcodError) as info:
        decide_transition("PAUSED", 4, "pause", 2)
    assert info.value.code == VERSION_CONFLICT
    assert info.value.details == {"expected": 2, "actual": 4, "state": "PAUSED"}


def test_a_stale_version_wins_over_an_invalid_request():
    with pytest.raises(ArcodError) as info:
        decide_transition("SUCCEEDED", 3, "pause", 1)
    assert info.value.code == VERSION_CONFLICT


def test_operator_examples():
    assert decide_transition("RUNNING", 1, "pause", None) == TransitionDecision(
        changed=True, new_state=S.PAUSED, new_version=2
    )
    assert decide_transition("PAUSED", 2, "pause", 2) == TransitionDecision(
        changed=False, new_state=S.PAUSED, new_version=2
    )
    assert decide_transition("PAUSED", 2, "cancel", 2).new_state == "CANCELING"
    with pytest.raises(ArcodError) as info:
        decide_transition("FAILED", 5, "resume", None)
    assert info.value.code == INVALID_TRANSITION
    assert "retry-failed" in info.value.message
    with pytest.raises(ArcodError) as info:  # nothing failed: nothing to point retry-failed at
        decide_transition("SUCCEEDED", 5, "resume", None)
    assert info.value.code == INVALID_TRANSITION
    assert "retry-failed" not in info.value.message


def test_unknown_request_is_a_bad_request():
    with pytest.raises(ArcodError) as info:
        decide_transition("RUNNING", 1, "explode", None)
    assert info.value.code == BAD_REQUEST
    assert "pause" in info.value.details["known"]


def test_decision_encodes_as_plain_json():
    decision = decide_transition("RUNNING", 1, "cancel", 1)
    assert msgspec.json.decode(msgspec.json.encode(decision)) == {
        "changed": True,
        "new_state": "CANCELING",
        "new_version": 2,
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(BackfillEvent)),
            st.sampled_from(["none", "current", "stale"]),
            st.integers(1, 3),  # how many times the request is delivered
        ),
        max_size=25,
    )
)
def test_state_version_grows_by_exactly_one_per_applied_transition(requests):
    state, version = BACKFILL_INITIAL_STATE, BACKFILL_INITIAL_VERSION
    applied = 0
    for event, expect, deliveries in requests:
        expect_version = {"none": None, "current": version, "stale": version - 1}[expect]
        for delivery in range(deliveries):
            try:
                decision = decide_transition(state, version, event, expect_version)
            except ArcodError as err:
                assert err.code in (INVALID_TRANSITION, VERSION_CONFLICT)
                assert (err.code == VERSION_CONFLICT) == (expect_version not in (None, version))
                continue
            if decision.changed:
                # A repeated delivery carrying the same expectation never applies twice.
                assert delivery == 0
                assert EXPECTED[(state, event)] == decision.new_state
                assert decision.new_version == version + 1
                applied += 1
            else:
                assert (decision.new_state, decision.new_version) == (state, version)
            state, version = decision.new_state, decision.new_version
        assert version == BACKFILL_INITIAL_VERSION + applied
