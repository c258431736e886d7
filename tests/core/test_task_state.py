"""The task state machine, and which tasks a plan lets start or forces to skip."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import INVALID_TRANSITION, ArcodError
from arcod.core.plan import Plan, PlanTask
from arcod.core.task_state import (
    TASK_INITIAL_STATE,
    TASK_TERMINAL_STATES,
    TASK_TRANSITIONS,
    TaskEvent,
    TaskState,
    allowed_task_events,
    apply_task_event,
    ready_tasks,
    tasks_to_skip,
)

S, E = TaskState, TaskEvent

EXPECTED = {
    (S.PENDING, E.START): S.RUNNING,
    (S.PENDING, E.SKIP): S.SKIPPED,
    (S.PENDING, E.CANCEL): S.CANCELED,
    (S.RUNNING, E.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, E.RETRY): S.RUNNING,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.CANCEL): S.CANCELED,
}


def test_table_is_the_spec():
    assert TASK_TRANSITIONS == EXPECTED
    assert TASK_INITIAL_STATE == S.PENDING
    assert set(TaskState) == {"PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}
    assert TASK_TERMINAL_STATES == {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELED}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(TaskState, TaskEvent)))
def test_every_pair_follows_the_table_or_is_refused(state, event):
    if (state, event) in EXPECTED:
        assert apply_task_event(state, event) == EXPECTED[(state, event)]
        assert apply_task_event(str(state), str(event)) == EXPECTED[(state, event)]
        return
    with pytest.raises(ArcodError) as info:
        apply_task_event(state, event)
    assert info.value.code == INVALID_TRANSITION
    assert info.value.details == {
        "from": str(state),
        "event": str(event),
        "allowed": [str(e) for (s, e) in EXPECTED if s == state],
    }


def test_terminal_states_are_exactly_those_without_events():
    for state in TaskState:
        assert (allowed_task_events(state) == []) == (state in TASK_TERMINAL_STATES)


def test_retries_stay_running_until_the_policy_is_exhausted():
    state = apply_task_event(S.PENDING, E.START)
    for _ in range(3):
        state = apply_task_event(state, E.RETRY)
        assert state == S.RUNNING
    assert apply_task_event(state, E.FAIL) == S.FAILED


def _plan(edges: dict[str, list[str]]) -> Plan:
    return Plan(tasks=tuple(PlanTask(task_id=t, asset=t, deps=tuple(d)) for t, d in edges.items()))


DIAMOND = _plan({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []})


def test_ready_tasks_examples():
    assert ready_tasks(DIAMOND, {}) == ["a", "e"]
    assert ready_tasks(DIAMOND, {"a": "SUCCEEDED"}) == ["b", "c", "e"]
    assert ready_tasks(DIAMOND, {"a": "SUCCEEDED", "b": "SUCCEEDED", "e": "RUNNING"}) == ["c"]
    assert ready_tasks(DIAMOND, {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "FAILED"}) == ["e"]
    done = {t.task_id: S.SUCCEEDED for t in DIAMOND.tasks}
    assert ready_tasks(DIAMOND, done) == []


def test_tasks_to_skip_examples():
    assert tasks_to_skip(DIAMOND, {"a": "FAILED"}, "a") == {"b": "a", "c": "a", "d": "a"}
    states = {"a": "SUCCEEDED", "b": "FAILED", "c": "RUNNING"}
    assert tasks_to_skip(DIAMOND, states, "b") == {"d": "b"}
    # d is already skipped because of b; c's later failure does not rename the cause.
    states = {"a": "SUCCEEDED", "b": "FAILED", "c": "FAILED", "d": "SKIPPED"}
    assert tasks_to_skip(DIAMOND, states, "c") == {}
    assert tasks_to_skip(DIAMOND, {"e": "FAILED"}, "e") == {}


def test_skip_walks_through_tasks_that_are_no_longer_pending():
    chain = _plan({"a": [], "b": ["a"], "c": ["b"]})
    assert tasks_to_skip(chain, {"a": "FAILED", "b": "CANCELED"}, "a") == {"c": "a"}


def test_skip_of_an_unknown_task_is_a_bug():
    with pytest.raises(ValueError):
        tasks_to_skip(DIAMOND, {}, "zzz")


@st.composite
def dags_with_states(draw):
    n = draw(st.integers(1, 8))
    edges = {}
    for i in range(n):
        edges[f"t{i}"] = [f"t{j}" for j in range(i) if draw(st.booleans())]
    states = {}
    for i in range(n):
        state = draw(st.none() | st.sampled_from(list(TaskState)))
        if state is not None:  # absent means PENDING
            states[f"t{i}"] = state
    return _plan(edges), states


def _descendants(plan: Plan, root: str) -> set[str]:
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for task in plan.tasks:
            if task.task_id not in found and any(d == root or d in found for d in task.deps):
                found.add(task.task_id)
                changed = True
    return found


@settings(max_examples=200, deadline=None)
@given(dags_with_states(), st.data())
def test_skip_is_exactly_the_pending_descendants(plan_states, data):
    plan, states = plan_states
    failed = data.draw(st.sampled_from([t.task_id for t in plan.tasks]))
    skipped = tasks_to_skip(plan, states, failed)
    pending = {t.task_id for t in plan.tasks if states.get(t.task_id, S.PENDING) == S.PENDING}
    assert set(skipped) == _descendants(plan, failed) & pending
    assert set(skipped.values()) <= {failed}
    assert list(skipped) == [t.task_id for t in plan.tasks if t.task_id in skipped]


@settings(max_examples=200, deadline=None)
@given(dags_with_states())
def test_ready_is_exactly_pending_with_every_dep_succeeded(plan_states):
    plan, states = plan_states

    def state(t):
        return states.get(t, S.PENDING)

    ready = ready_tasks(plan, states)
    expected = [
        t.task_id
        for t in plan.tasks
        if state(t.task_id) == S.PENDING and all(state(d) == S.SUCCEEDED for d in t.deps)
    ]
    assert ready == expected


def _ancestors(plan: Plan, task_id: str) -> set[str]:
    deps = {t.task_id: t.deps for t in plan.tasks}
    found: set[str] = set()
    frontier = [task_id]
    while frontier:
        for dep in deps[frontier.pop()]:
            if dep not in found:
                found.add(dep)
                frontier.append(dep)
    return found


@settings(max_examples=200, deadline=None)
@given(dags_with_states(), st.data())
def test_driving_a_run_with_ready_and_skip_leaves_no_task_behind(plan_states, data):
    """Launch ready tasks, let each succeed or fail, skip what a failure dooms: every task ends."""
    plan, _ = plan_states
    states: dict[str, TaskState] = {}
    causes: dict[str, str] = {}
    while ready := ready_tasks(plan, states):
        task_id = data.draw(st.sampled_from(ready))
        task = next(t for t in plan.tasks if t.task_id == task_id)
        assert all(states.get(d) == S.SUCCEEDED for d in task.deps)
        states[task_id] = apply_task_event(S.PENDING, E.START)
        for _ in range(data.draw(st.integers(0, 2))):
            states[task_id] = apply_task_event(states[task_id], E.RETRY)
        event = data.draw(st.sampled_from([E.SUCCEED, E.FAIL]))
        states[task_id] = apply_task_event(states[task_id], event)
        if event == E.FAIL:
            for skipped, cause in tasks_to_skip(plan, states, task_id).items():
                states[skipped] = apply_task_event(S.PENDING, E.SKIP)
                causes[skipped] = cause
    assert {t.task_id for t in plan.tasks} == set(states)
    assert all(s in TASK_TERMINAL_STATES for s in states.values())
    for skipped, cause in causes.items():
        assert states[cause] == S.FAILED and cause in _ancestors(plan, skipped)
    for t in plan.tasks:
        if states[t.task_id] == S.SUCCEEDED:
            assert all(states[a] == S.SUCCEEDED for a in _ancestors(plan, t.task_id))
