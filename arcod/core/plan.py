"""Plans: the exact set of tasks a run executes, and the edges between them.

A plan is one task per (asset, partition) of the resolved selection. It is computed once,
stored with the run, and never recomputed from later definitions: reruns read the parent's
stored plan. Task ids are derived from (asset, partition) so two plans over the same pairs
name their tasks the same way, which is what lets a rerun talk about "the parent's tasks".
"""

from __future__ import annotations

import msgspec


class PlanTask(msgspec.Struct, frozen=True, kw_only=True):
    """One unit of work: materialise `asset` for `partition` (None when unpartitioned)."""

    task_id: str
    asset: str
    partition: str | None = None
    deps: tuple[str, ...] = ()  # task ids inside the same plan that must succeed first


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks in a deterministic topological order (ties broken by task id)."""

    tasks: tuple[PlanTask, ...]


def task_id_for(asset: str, partition: str | None) -> str:
    """The stable name of the task for (asset, partition): `asset` or `asset[partition]`.

    Asset keys cannot contain `[`, so the asset part of an id is never ambiguous; (asset,
    partition) is also stored in its own columns wherever a task is persisted.
    """
    return asset if partition is None else f"{asset}[{partition}]"
