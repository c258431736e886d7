"""Plans: one task per (asset, partition), edges only inside the plan, deterministic order."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.graph import AssetGraph
from arcod.core.plan import Plan, PlanTask, task_id_for
from arcod.core.planning import build_plan, run_fingerprint
from tests.core.test_graph import dags

GRAPH = AssetGraph.from_deps(
    {
        "raw/orders": [],
        "dim/regions": [],
        "sales/daily": ["raw/orders", "dim/regions"],
        "sales/summary": ["sales/daily"],
        "report": ["sales/summary", "dim/regions"],
    }
)
DAYS = ["2024-01-01", "2024-01-02"]
PARTITIONED = {"raw/orders", "sales/daily", "sales/summary"}


def deps_of(plan: Plan) -> dict[str, tuple[str, ...]]:
    return {t.task_id: t.deps for t in plan.tasks}


def test_unpartitioned_run_has_one_task_per_asset_and_only_in_plan_edges() -> None:
    plan = build_plan(GRAPH, ["sales/daily", "sales/summary"], None, PARTITIONED)
    assert plan.tasks == (
        PlanTask(task_id="sales/daily", asset="sales/daily"),
        PlanTask(task_id="sales/summary", asset="sales/summary", deps=("sales/daily",)),
    )


def test_partitioned_to_partitioned_is_identity() -> None:
    plan = build_plan(GRAPH, ["raw/orders", "sales/daily"], DAYS, PARTITIONED)
    assert deps_of(plan) == {
        "raw/orders[2024-01-01]": (),
        "raw/orders[2024-01-02]": (),
        "sales/daily[2024-01-01]": ("raw/orders[2024-01-01]",),
        "sales/daily[2024-01-02]": ("raw/orders[2024-01-02]",),
    }
    assert [t.partition for t in plan.tasks if t.asset == "sales/daily"] == DAYS


def test_unpartitioned_parent_feeds_every_task_of_the_child() -> None:
    plan = build_plan(GRAPH, ["dim/regions", "sales/daily"], DAYS, PARTITIONED)
    assert deps_of(plan) == {
        "dim/regions": (),
        "sales/daily[2024-01-01]": ("dim/regions",),
        "sales/daily[2024-01-02]": ("dim/regions",),
    }


def test_unpartitioned_child_waits_for_every_partition_of_the_parent() -> None:
    plan = build_plan(GRAPH, ["sales/summary", "report", "dim/regions"], DAYS, PARTITIONED)
    assert deps_of(plan)["report"] == ("dim/regions", "sales/summary[2024-01-01]", "sales/summary[2024-01-02]")
    assert plan.tasks[-1].task_id == "report"


def test_tasks_come_in_topological_order_ties_by_task_id() -> None:
    plan = build_plan(GRAPH, GRAPH.keys, DAYS, PARTITIONED)
    assert [t.task_id for t in plan.tasks] == [
        "dim/regions",
        "raw/orders[2024-01-01]",
        "raw/orders[2024-01-02]",
        "sales/daily[2024-01-01]",
        "sales/daily[2024-01-02]",
        "sales/summary[2024-01-01]",
        "sales/summary[2024-01-02]",
        "report",
    ]
    assert msgspec.json.encode(plan) == msgspec.json.encode(build_plan(GRAPH, reversed(GRAPH.keys), DAYS, PARTITIONED))


@pytest.mark.parametrize(
    ("assets", "partitions", "match"),
    [
        (["nope"], None, "nope"),
        (["raw/orders"], [], "empty"),
        (["raw/orders"], ["a", "a"], "duplicate"),
    ],
)
def test_programming_errors(assets: list[str], partitions: list[str] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_plan(GRAPH, assets, partitions, PARTITIONED)


def test_cycles_are_refused() -> None:
    graph = AssetGraph.from_deps({"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="cycle"):
        build_plan(graph, ["a", "b"], None, ())


def test_run_fingerprint_covers_assets_partitions_and_tags_only() -> None:
    base = run_fingerprint(["b", "a"], {"kind": "keys", "keys": ["2024-01-01"]}, {"env": "prod"})
    assert base == run_fingerprint(["a", "b", "a"], {"keys": ["2024-01-01"], "kind": "keys"}, {"env": "prod"})
    assert base != run_fingerprint(["a"], {"kind": "keys", "keys": ["2024-01-01"]}, {"env": "prod"})
    assert base != run_fingerprint(["a", "b"], {"kind": "keys", "keys": ["2024-01-02"]}, {"env": "prod"})
    assert base != run_fingerprint(["a", "b"], {"kind": "keys", "keys": ["2024-01-01"]}, {})
    assert run_fingerprint(["a"], None, {}) != run_fingerprint(["a"], "2024-01-01", {})
    assert len(base) == 64


@settings(max_examples=100, deadline=None)
@given(dags(max_nodes=8), st.data())
def test_plans_are_well_formed(deps: dict[str, list[str]], data: st.DataObject) -> None:
    graph = AssetGraph.from_deps(deps)
    keys = sorted(deps)
    assets = data.draw(st.sets(st.sampled_from(keys), min_size=1))
    partitions = data.draw(st.none() | st.lists(st.sampled_from(["p1", "p2", "p3"]), min_size=1, unique=True))
    partitioned = data.draw(st.sets(st.sampled_from(keys)))
    plan = build_plan(graph, assets, partitions, partitioned)

    ids = [t.task_id for t in plan.tasks]
    assert len(ids) == len(set(ids))
    expected = {
        task_id_for(a, p)
        for a in assets
        for p in (partitions if partitions is not None and a in partitioned else [None])
    }
    assert set(ids) == expected
    position = {t: i for i, t in enumerate(ids)}
    by_id = {t.task_id: t for t in plan.tasks}
    for task in plan.tasks:
        assert task.task_id == task_id_for(task.asset, task.partition)
        assert list(task.deps) == sorted(set(task.deps))
        for dep in task.deps:
            assert dep in position and position[dep] < position[task.task_id]  # inside the plan, earlier
            parent = by_id[dep]
            assert parent.asset in graph.parents(task.asset)  # only along graph edges
            if parent.partition is not None and task.partition is not None:
                assert parent.partition == task.partition
        # Every in-plan parent is waited for.
        assert {by_id[d].asset for d in task.deps} == {p for p in graph.parents(task.asset) if p in assets}
    assert build_plan(graph, sorted(assets), partitions, partitioned) == plan
