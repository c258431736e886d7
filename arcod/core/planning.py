"""From a resolved selection to a plan: one task per (asset, partition), and its edges.

Only assets in the plan get tasks, and only edges between in-plan assets become task
dependencies: an unselected upstream asset is taken as already materialised (SPEC §4), so
it never blocks a task and is never run behind the operator's back.

Edges, until partition mappings land (every partitioned asset of a plan shares one
definition, so the mapping is identity):

- partitioned parent -> partitioned child: the child's task for key K waits for the
  parent's task for K;
- unpartitioned parent -> any child: every task of the child waits for the parent's one task;
- partitioned parent -> unpartitioned child: the child's one task waits for every partition
  task of the parent (it runs once, after all of them).

Tasks come out in a deterministic topological order, ties broken by task id, as `Plan`
promises, so the same request always yields the same plan, byte for byte.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence

from arcod.core.canonical import fingerprint
from arcod.core.graph import AssetGraph
from arcod.core.plan import Plan, PlanTask, task_id_for

__all__ = ["build_plan", "run_fingerprint"]


def build_plan(
    graph: AssetGraph,
    assets: Iterable[str],
    partitions: Sequence[str] | None,
    partitioned: Collection[str],
) -> Plan:
    """Plan `assets` over `partitions` (the run's partition keys, None for an unpartitioned run).

    Assets in `partitioned` get one task per key of `partitions`; every other asset, and
    every asset when `partitions` is None, gets one task with partition None.
    Raises ValueError for an asset not in the graph, duplicate or empty `partitions`, or a
    cycle: the caller has validated all of these, so they are programming errors.
    """
    chosen = set(assets)
    unknown = sorted(a for a in chosen if a not in graph)
    if unknown:
        raise ValueError(f"assets not in the graph: {', '.join(unknown)}")
    if partitions is not None:
        if not partitions:
            raise ValueError("partitions is empty; a partitioned plan needs at least one key")
        if len(set(partitions)) != len(partitions):
            raise ValueError("partitions contains duplicate keys")

    def is_partitioned(asset: str) -> bool:
        return partitions is not None and asset in partitioned

    def tasks_of(asset: str) -> list[tuple[str | None, str]]:
        keys: Sequence[str | None] = partitions if partitions is not None and asset in partitioned else (None,)
        return [(p, task_id_for(asset, p)) for p in keys]

    tasks: dict[str, PlanTask] = {}
    for asset in sorted(chosen):
        in_plan_parents = [p for p in graph.parents(asset) if p in chosen]
        for partition, task_id in tasks_of(asset):
            needs: set[str] = set()
            for parent in in_plan_parents:
                if not is_partitioned(parent):
                    needs.add(task_id_for(parent, None))
                elif partition is None:
                    needs.update(t for _, t in tasks_of(parent))
                else:
                    needs.add(task_id_for(parent, partition))
            tasks[task_id] = PlanTask(task_id=task_id, asset=asset, partition=partition, deps=tuple(sorted(needs)))

    return Plan(tasks=tuple(tasks[t] for t in _topological({t: task.deps for t, task in tasks.items()})))


def _topological(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm over task ids, smallest ready id first."""
    waiting = {t: len(ds) for t, ds in deps.items()}
    dependents: dict[str, list[str]] = {t: [] for t in deps}
    for t, ds in deps.items():
        for d in ds:
            dependents[d].append(t)
    ready = [t for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        t = heapq.heappop(ready)
        order.append(t)
        for nxt in dependents[t]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, nxt)
    if len(order) != len(deps):
        raise ValueError("the selected assets contain a dependency cycle")
    return order


def run_fingerprint(assets: Sequence[str], partition_selection: object | None, tags: Mapping[str, str]) -> str:
    """What makes two run requests "the same" for run_key idempotency (SPEC §4, §5).

    Covers the resolved assets (as a sorted set), the partition selection exactly as the
    caller represents it (a selector struct, a key, None) and the tags; nothing else, so
    the same assets reached by two spellings of a selection are the same run.
    """
    return fingerprint(
        {"assets": sorted(set(assets)), "partitions": partition_selection, "tags": dict(tags)}
    )
