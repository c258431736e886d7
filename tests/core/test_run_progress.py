"""RunProgress answers exactly what the whole-mapping functions answer, after any history."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.plan import Plan, PlanTask
from arcod.core.run_progress import RunProgress
from arcod.core.run_state import RunState, run_outcome
from arcod.core.task_state import TaskState, ready_tasks, tasks_to_skip

S = TaskState


def _plan(edges: dict[str, list[str]]) -> Plan:
    return Plan(tasks=tuple(PlanTask(task_id=t, asset=t, deps=tuple(d)) for t, d in edges.items()))


DIAMOND = _plan({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []})


def test_a_run_driven_to_the_end():
    progress = RunProgress(DIAMOND, {})
    assert progress.ready(10) == ["a", "e"]
    assert progress.ready(1) == ["a"]
    assert progress.ready(1, exclude={"a"}) == ["e"]
    progress.set("a", S.RUNNING)
    progress.set("e", S.RUNNING)
    assert progress.ready(10) == []
    progress.set("a", S.SUCCEEDED)
    assert progress.ready(10) == ["b", "c"]
    progress.set("b", S.RUNNING)
    progress.set("c", S.FAILED)
    assert progress.to_skip("c") == {"d": "c"}
    progress.set("d", S.SKIPPED)
    assert progress.outcome() is None  # b and e still run
    progress.set("b", S.SUCCEEDED)
    progress.set("e", S.SUCCEEDED)
    assert progress.outcome() == RunState.FAILED
    assert progress.outcome(canceling=True) == RunState.CANCELED
    assert progress.counts[S.SUCCEEDED] == 3


def test_starting_from_stored_states():
    progress = RunProgress(DIAMOND, {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "RUNNING"}, version=7)
    assert progress.version == 7
    assert progress.ready(10) == ["e"]
    progress.set("c", "SUCCEEDED")
    assert progress.ready(10) == ["d", "e"]


def test_skip_of_an_unknown_task_is_a_bug():
    with pytest.raises(ValueError):
        RunProgress(DIAMOND, {}).to_skip("zzz")


@st.composite
def histories(draw):
    """A random DAG (plan order topological), stored states, then changes to any state."""
    n = draw(st.integers(1, 10))
    edges = {f"t{i}": [f"t{j}" for j in range(i) if draw(st.booleans())] for i in range(n)}
    ids = list(edges)
    states = {t: draw(st.sampled_from(list(S))) for t in ids if draw(st.booleans())}
    changes = draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(list(S))), max_size=25))
    return _plan(edges), states, changes


@settings(max_examples=300, deadline=None)
@given(history=histories(), data=st.data())
def test_every_answer_matches_the_whole_mapping_functions(history, data):
    plan, stored, changes = history
    ids = [t.task_id for t in plan.tasks]
    progress = RunProgress(plan, stored)
    states = {t: S(stored.get(t, S.PENDING)) for t in ids}
    for step in [None, *changes]:
        if step is not None:
            task_id, state = step
            progress.set(task_id, state)
            states[task_id] = state
        assert progress.states() == states
        assert +progress.counts == +Counter(states.values())
        n = data.draw(st.integers(1, len(ids) + 1))
        exclude = set(data.draw(st.lists(st.sampled_from(ids), max_size=3)))
        assert progress.ready(n, exclude) == [t for t in ready_tasks(plan, states) if t not in exclude][:n]
        assert progress.ready(len(ids)) == ready_tasks(plan, states)  # asking leaves it unchanged
        for canceling in (False, True):
            assert progress.outcome(canceling=canceling) == run_outcome(states.values(), canceling=canceling)
        failed = data.draw(st.sampled_from(ids))
        assert list(progress.to_skip(failed).items()) == list(tasks_to_skip(plan, states, failed).items())
