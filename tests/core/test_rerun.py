"""Rerun sets: from_failure never reruns a success, subset never leaves the parent's plan."""

from __future__ import annotations

import hashlib
import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import (
    BAD_REQUEST,
    EMPTY_SELECTION,
    INVALID_TRANSITION,
    UNKNOWN_ASSETS,
    ArcodError,
)
from arcod.core.plan import Plan, PlanTask, task_id_for
from arcod.core.rerun import (
    RerunKind,
    check_rerun_allowed,
    derived_rerun_key,
    parent_plan_graph,
    rerun_all,
    rerun_from_failure,
    rerun_subset,
    task_set_hash,
)
from arcod.core.run_state import RunState
from arcod.core.task_state import TaskState


def _plan(edges: dict[str, list[str]]) -> Plan:
    return Plan(tasks=tuple(PlanTask(task_id=t, asset=t, deps=tuple(d)) for t, d in edges.items()))


SMALL_GRAPHS = {
    "single": _plan({"a": []}),
    "chain2": _plan({"a": [], "b": ["a"]}),
    "chain3": _plan({"a": [], "b": ["a"], "c": ["b"]}),
    "chain4": _plan({"a": [], "b": ["a"], "c": ["b"], "d": ["c"]}),
    "fork": _plan({"a": [], "b": ["a"], "c": ["a"]}),
    "join": _plan({"a": [], "b": [], "c": ["a", "b"]}),
    "diamond": _plan({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}),
    "diamond_plus_shortcut": _plan({"a": [], "b": ["a"], "c": ["a"], "d": ["a", "b", "c"]}),
    "two_components": _plan({"a": [], "b": ["a"], "c": [], "d": ["c"]}),
}

MISSING = None  # a task the parent never recorded: it never started


def _check_sub_plan(parent: Plan, child: Plan, expected_ids: list[str]) -> None:
    """child is exactly `expected_ids` of parent, in parent order, with edges only among them."""
    assert [t.task_id for t in child.tasks] == expected_ids
    by_id = {t.task_id: t for t in parent.tasks}
    kept = set(expected_ids)
    for task in child.tasks:
        original = by_id[task.task_id]
        assert (task.asset, task.partition) == (original.asset, original.partition)
        assert task.deps == tuple(d for d in original.deps if d in kept)


def _check_from_failure(plan: Plan, states: dict) -> None:
    def state(t):
        return states.get(t, TaskState.PENDING)

    expected = [t.task_id for t in plan.tasks if state(t.task_id) != TaskState.SUCCEEDED]
    if not expected:
        with pytest.raises(ArcodError) as info:
            rerun_from_failure(plan, states)
        assert info.value.code == EMPTY_SELECTION
        return
    child = rerun_from_failure(plan, states)
    _check_sub_plan(plan, child, expected)
    assert not any(state(t.task_id) == TaskState.SUCCEEDED for t in child.tasks)


@pytest.mark.parametrize("name", list(SMALL_GRAPHS))
def test_from_failure_over_every_combination_of_task_states(name):
    plan = SMALL_GRAPHS[name]
    ids = [t.task_id for t in plan.tasks]
    for combo in itertools.product([*TaskState, MISSING], repeat=len(ids)):
        states = {t: s for t, s in zip(ids, combo) if s is not MISSING}
        _check_from_failure(plan, states)


def test_from_failure_does_not_rerun_succeeded_tasks():
    plan = SMALL_GRAPHS["diamond"]
    states = {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "FAILED", "d": "SKIPPED"}
    child = rerun_from_failure(plan, states)
    assert child == Plan(
        tasks=(PlanTask(task_id="c", asset="c"), PlanTask(task_id="d", asset="d", deps=("c",)))
    )


def test_from_failure_with_nothing_failed_says_what_to_do():
    plan = SMALL_GRAPHS["chain2"]
    with pytest.raises(ArcodError) as info:
        rerun_from_failure(plan, {"a": "SUCCEEDED", "b": "SUCCEEDED"})
    assert info.value.code == EMPTY_SELECTION
    assert "--all" in info.value.message


@st.composite
def partitioned_plans(draw):
    """Plans as the planner makes them: assets over shared partitions, identity edges."""
    n_assets = draw(st.integers(1, 6))
    parents = {
        f"a{i}": sorted(f"a{j}" for j in range(i) if draw(st.booleans()))
        for i in range(n_assets)
    }
    partitions = draw(
        st.sampled_from([[None], ["p1"], ["p1", "p2"], ["2024-01-01", "2024-01-02", "x"]])
    )
    tasks = []
    for asset, ups in parents.items():
        for p in partitions:
            deps = tuple(task_id_for(u, p) for u in ups)
            task_id = task_id_for(asset, p)
            tasks.append(PlanTask(task_id=task_id, asset=asset, partition=p, deps=deps))
    return Plan(tasks=tuple(tasks)), parents


@st.composite
def plans_with_states(draw):
    plan, _ = draw(partitioned_plans())
    states = {}
    for task in plan.tasks:
        state = draw(st.sampled_from([*TaskState, MISSING]))
        if state is not MISSING:
            states[task.task_id] = state
    return plan, states


@settings(max_examples=200, deadline=None)
@given(plans_with_states())
def test_from_failure_on_random_plans(plan_states):
    plan, states = plan_states
    _check_from_failure(plan, states)


@settings(max_examples=150, deadline=None)
@given(plans_with_states())
def test_rerunning_the_rerun_until_it_succeeds_never_repeats_a_success(plan_states):
    """A chain of from_failure reruns shrinks and never runs a task that succeeded before."""
    plan, states = plan_states
    succeeded = {t for t, s in states.items() if s == TaskState.SUCCEEDED}
    current, current_states = plan, states
    while any(current_states.get(t.task_id) != TaskState.SUCCEEDED for t in current.tasks):
        child = rerun_from_failure(current, current_states)
        assert not {t.task_id for t in child.tasks} & succeeded
        assert len(child.tasks) <= len(current.tasks)
        # In the child, pretend the first task now succeeds and the others keep their state.
        first = child.tasks[0].task_id
        current_states = {
            t.task_id: current_states.get(t.task_id, TaskState.PENDING) for t in child.tasks
        }
        current_states[first] = TaskState.SUCCEEDED
        succeeded.add(first)
        current = child


def test_rerun_all_is_the_whole_stored_plan():
    for plan in SMALL_GRAPHS.values():
        assert rerun_all(plan) == plan


def test_subset_selecting_an_upstream_does_not_run_its_downstream():
    plan = SMALL_GRAPHS["diamond"]
    child = rerun_subset(plan, {"a"})
    assert [t.task_id for t in child.tasks] == ["a"]
    child = rerun_subset(plan, ["b", "d"])
    assert child == Plan(
        tasks=(PlanTask(task_id="b", asset="b"), PlanTask(task_id="d", asset="d", deps=("b",)))
    )


def test_subset_cannot_add_assets_outside_the_parent_plan():
    with pytest.raises(ArcodError) as info:
        rerun_subset(SMALL_GRAPHS["chain2"], {"a", "zeta", "omega"})
    assert info.value.code == UNKNOWN_ASSETS
    assert info.value.details == {"keys": ["omega", "zeta"]}


def test_subset_of_nothing_is_refused():
    with pytest.raises(ArcodError) as info:
        rerun_subset(SMALL_GRAPHS["chain2"], [])
    assert info.value.code == EMPTY_SELECTION


@settings(max_examples=200, deadline=None)
@given(partitioned_plans(), st.data())
def test_subset_on_random_plans(plan_parents, data):
    plan, parents = plan_parents
    selected = data.draw(st.sets(st.sampled_from(sorted(parents)), min_size=1))
    child = rerun_subset(plan, selected)
    expected = [t.task_id for t in plan.tasks if t.asset in selected]
    _check_sub_plan(plan, child, expected)
    assert {t.asset for t in child.tasks} == selected


@settings(max_examples=200, deadline=None)
@given(partitioned_plans())
def test_parent_plan_graph_recovers_the_asset_graph(plan_parents):
    plan, parents = plan_parents
    assert parent_plan_graph(plan) == {a: tuple(ups) for a, ups in parents.items()}


def test_parent_plan_graph_drops_self_edges_between_partitions():
    plan = Plan(
        tasks=(
            PlanTask(task_id="s[1]", asset="s", partition="1"),
            PlanTask(task_id="s[2]", asset="s", partition="2", deps=("s[1]",)),
            PlanTask(task_id="t[2]", asset="t", partition="2", deps=("s[2]", "s[1]")),
        )
    )
    assert parent_plan_graph(plan) == {"s": (), "t": ("s",)}


def _reference_hash(plan: Plan) -> str:
    ids = sorted(t.task_id for t in plan.tasks)
    encoded = json.dumps(ids, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def test_task_set_hash_is_pinned():
    """Derived keys outlive upgrades: changing the hash would make an old rerun request new."""
    plan = SMALL_GRAPHS["diamond"]
    assert task_set_hash(plan) == _reference_hash(plan) == "bb037af03d977ec8"


@settings(max_examples=200, deadline=None)
@given(partitioned_plans(), st.randoms())
def test_task_set_hash_depends_on_the_set_only(plan_parents, rnd):
    plan, _ = plan_parents
    shuffled = list(plan.tasks)
    rnd.shuffle(shuffled)
    without_edges = Plan(tasks=tuple(PlanTask(task_id=t.task_id, asset=t.asset) for t in shuffled))
    digest = task_set_hash(plan)
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert digest == _reference_hash(plan)
    assert task_set_hash(without_edges) == digest
    assert derived_rerun_key("r1", "from_failure", without_edges) == derived_rerun_key(
        "r1", RerunKind.FROM_FAILURE, plan
    )
    if len(plan.tasks) > 1:
        assert task_set_hash(Plan(tasks=plan.tasks[1:])) != digest


def test_task_set_hash_tells_every_subset_of_a_small_plan_apart():
    tasks = SMALL_GRAPHS["chain4"].tasks
    subsets = [
        Plan(tasks=tuple(c))
        for n in range(len(tasks) + 1)
        for c in itertools.combinations(tasks, n)
    ]
    assert len({task_set_hash(p) for p in subsets}) == len(subsets)


def test_derived_rerun_key_shape():
    plan = SMALL_GRAPHS["diamond"]
    assert derived_rerun_key("run_01", "subset", plan) == "rerun:run_01:subset:bb037af03d977ec8"
    assert derived_rerun_key("run_01", "all", plan) != derived_rerun_key("run_02", "all", plan)
    assert derived_rerun_key("run_01", "all", plan) != derived_rerun_key("run_01", "subset", plan)
    with pytest.raises(ArcodError) as info:
        derived_rerun_key("run_01", "some", plan)
    assert info.value.code == BAD_REQUEST


ALLOWED = {
    RerunKind.FROM_FAILURE: {RunState.FAILED, RunState.CANCELED},
    RerunKind.SUBSET: {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED},
    RerunKind.ALL: {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED},
}


@pytest.mark.parametrize(("kind", "parent_state"), list(itertools.product(RerunKind, RunState)))
def test_check_rerun_allowed_for_every_kind_and_parent_state(kind, parent_state):
    if parent_state in ALLOWED[kind]:
        assert check_rerun_allowed(str(kind), str(parent_state)) is None
        return
    with pytest.raises(ArcodError) as info:
        check_rerun_allowed(kind, parent_state)
    err = info.value
    assert err.code == INVALID_TRANSITION
    assert err.details == {
        "kind": str(kind),
        "parent_state": str(parent_state),
        "allowed": sorted(str(s) for s in ALLOWED[kind]),
    }
    assert str(parent_state) in err.message


def test_rerun_from_failure_of_a_success_points_to_all():
    with pytest.raises(ArcodError) as info:
        check_rerun_allowed("from_failure", "SUCCEEDED")
    assert "--all" in info.value.message


def test_unknown_rerun_kind_is_a_bad_request():
    with pytest.raises(ArcodError) as info:
        check_rerun_allowed("everything", "FAILED")
    assert info.value.code == BAD_REQUEST
