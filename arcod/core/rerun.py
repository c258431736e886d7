"""Reruns: which of a parent run's tasks a rerun executes, and the key that names it.

This file owns the three rerun kinds (SPEC §5) as pure functions from the parent's *stored*
plan to the child's plan, the rule for which parent states allow which kind, and the derived
run_key that makes a repeated rerun request return the same run.

Every child plan is a sub-plan of the parent's: tasks are taken from it unchanged (same ids,
same order) and only edges to tasks left out are dropped. So a rerun can never widen the
parent's scope, and a dependency left out is one the child treats as already satisfied --
for `from_failure` because that task succeeded in the parent, for `subset` because the
operator did not select it (SPEC §4: unselected upstream is taken as materialised).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec

from arcod.core.errors import (
    BAD_REQUEST,
    EMPTY_SELECTION,
    INVALID_TRANSITION,
    UNKNOWN_ASSETS,
    ArcodError,
)
from arcod.core.graph import AssetGraph
from arcod.core.plan import Plan
from arcod.core.run_state import RunState
from arcod.core.selection import (
    AssetAttrs,
    Resolution,
    SelectionRequest,
    format_selection,
    request_node,
    resolve_request,
)
from arcod.core.task_state import TaskState


class RerunKind(enum.StrEnum):
    FROM_FAILURE = "from_failure"
    SUBSET = "subset"
    ALL = "all"


# The parent states each kind accepts. from_failure needs something to have gone wrong;
# subset and all only need the parent to be over, so two runs never race on one asset.
RERUN_ALLOWED_PARENT_STATES: dict[RerunKind, frozenset[RunState]] = {
    RerunKind.FROM_FAILURE: frozenset({RunState.FAILED, RunState.CANCELED}),
    RerunKind.SUBSET: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED}),
    RerunKind.ALL: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED}),
}

TASK_SET_HASH_LENGTH = 16  # hex digits: 64 bits, ample for the reruns of one parent


def _kind(kind: RerunKind | str) -> RerunKind:
    try:
        return RerunKind(kind)
    except ValueError:
        known = [str(k) for k in RerunKind]
        raise ArcodError(
            BAD_REQUEST,
            f"{str(kind)!r} is not a rerun kind; use one of {', '.join(known)}",
            {"kind": str(kind), "known": known},
        ) from None


def _sub_plan(plan: Plan, keep: Collection[str]) -> Plan:
    """The tasks in `keep`, in the parent's order, with edges to dropped tasks removed."""
    keep = frozenset(keep)
    return Plan(
        tasks=tuple(
            msgspec.structs.replace(task, deps=tuple(d for d in task.deps if d in keep))
            for task in plan.tasks
            if task.task_id in keep
        )
    )


def rerun_from_failure(plan: Plan, states: Mapping[str, TaskState | str]) -> Plan:
    """Exactly the parent's tasks that did not succeed (a task missing from `states` never ran).

    Refused with `empty_selection` when every task succeeded: a run with nothing to do would
    be a record of nothing, and the operator most likely meant `--all`.
    """
    keep = [
        task.task_id
        for task in plan.tasks
        if TaskState(states.get(task.task_id, TaskState.PENDING)) != TaskState.SUCCEEDED
    ]
    if not keep:
        raise ArcodError(
            EMPTY_SELECTION,
            "every task of the parent run succeeded, so there is nothing to rerun from failure; "
            "use `arcod rerun RUN --all` to run it again, or --select for a part of it",
            {"tasks_total": len(plan.tasks)},
        )
    return _sub_plan(plan, keep)


def rerun_all(plan: Plan) -> Plan:
    """The parent's whole plan, as stored: not re-planned from today's definitions."""
    return plan


def rerun_subset(plan: Plan, selected_assets: Collection[str]) -> Plan:
    """The parent's tasks whose asset is selected, with the edges among them.

    The caller resolves the selection (closure rules included) over `parent_plan_graph`, so
    every selected asset should be in the plan; one that is not is refused rather than
    dropped, since silently running less than asked is as surprising as running more.
    """
    selected = frozenset(selected_assets)
    in_plan = {task.asset for task in plan.tasks}
    unknown = sorted(selected - in_plan)
    if unknown:
        raise ArcodError(
            UNKNOWN_ASSETS,
            f"not in the parent run's plan: {', '.join(unknown)}; a rerun can only run tasks "
            "of its parent -- start a new run with `arcod run --select` for these",
            {"keys": unknown},
        )
    if not selected:
        raise ArcodError(
            EMPTY_SELECTION,
            "the selection is empty; select at least one asset of the parent run",
            {},
        )
    return _sub_plan(plan, [task.task_id for task in plan.tasks if task.asset in selected])


class NoAttrs(msgspec.Struct, frozen=True):
    """Selection labels of an asset the parent's code_version does not describe: none."""

    group: str = ""
    tags: dict[str, str] = {}
    kinds: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()


PLAN_ASSETS_SHOWN = 20  # assets of the parent's plan a refusal names (details carry them all)


def _listed(keys: Sequence[str], limit: int = PLAN_ASSETS_SHOWN) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def resolve_subset(
    parent_run_id: str,
    plan: Plan,
    request: SelectionRequest,
    attrs: Mapping[str, AssetAttrs],
    known_deps: Mapping[str, Iterable[str]] | None = None,
) -> Resolution:
    """A subset rerun's selection, evaluated within the parent's plan (SPEC §5).

    `attrs` are the labels of the parent's code_version (an asset missing from them has
    none); `known_deps` its whole graph (key -> parents), used only to explain a refusal.
    Whatever the selection names outside the plan is refused in the same words, naming the
    run and the assets it can take: an exact key the plan lacks (`unknown_assets`) as much
    as a label or pattern that matches assets, just none of the plan (`empty_selection`,
    naming those it matched outside).
    """
    graph = AssetGraph.from_deps(parent_plan_graph(plan))
    in_plan = list(graph.keys)
    plan_attrs = {k: attrs.get(k) or NoAttrs() for k in in_plan}
    can_take = (f"a subset rerun can only take assets the parent planned ({_listed(in_plan)}); "
                "start a new run with `arcod run --select` for others")
    details = {"parent_run_id": parent_run_id, "parent_assets": in_plan}
    try:
        return resolve_request(request, graph, plan_attrs)
    except ArcodError as exc:
        if exc.code == UNKNOWN_ASSETS:
            keys = exc.details["keys"]
            raise ArcodError(
                UNKNOWN_ASSETS,
                f"not in the plan of run {parent_run_id}: {', '.join(keys)}; {can_take}",
                {"keys": keys, **details},
            ) from None
        if exc.code != EMPTY_SELECTION:
            raise
    text = format_selection(request_node(request))
    outside = _matches_outside(request, attrs, known_deps)
    where = f" (it matches {_listed(outside, 10)}, outside the plan)" if outside else ""
    raise ArcodError(
        EMPTY_SELECTION,
        f"the selection `{text}` matches no asset in the plan of run {parent_run_id}{where}; {can_take}",
        {"expression": text, "matches_outside_plan": outside, **details},
    )


def _matches_outside(request: SelectionRequest, attrs: Mapping[str, AssetAttrs],
                     known_deps: Mapping[str, Iterable[str]] | None) -> list[str]:
    """What the selection matches in the parent's whole code_version (for the refusal only)."""
    if not known_deps:
        return []
    try:
        graph = AssetGraph.from_deps(known_deps)
        return list(resolve_request(request, graph, {k: attrs.get(k) or NoAttrs() for k in graph.keys}).keys)
    except ArcodError:
        return []


def parent_plan_graph(plan: Plan) -> dict[str, tuple[str, ...]]:
    """asset -> its parent assets, as the plan's task edges connect them (sorted, no self-edges).

    This is the graph a subset rerun's selection is evaluated in: the parent's graph as it
    was planned, not today's definitions. Every asset of the plan is a key.
    """
    asset_of = {task.task_id: task.asset for task in plan.tasks}
    parents: dict[str, set[str]] = {task.asset: set() for task in plan.tasks}
    for task in plan.tasks:
        for dep in task.deps:
            upstream = asset_of[dep]
            if upstream != task.asset:
                parents[task.asset].add(upstream)
    return {asset: tuple(sorted(ups)) for asset, ups in sorted(parents.items())}


def task_set_hash(plan: Plan) -> str:
    """A short hex digest of the sorted task ids: the same set gives the same hash, in any order.

    The ids are hashed as a canonical JSON list, so no choice of separator can make two
    different sets collide.
    """
    ids = sorted(task.task_id for task in plan.tasks)
    return hashlib.sha256(msgspec.json.encode(ids)).hexdigest()[:TASK_SET_HASH_LENGTH]


def derived_rerun_key(parent_run_id: str, kind: RerunKind | str, plan: Plan) -> str:
    """`rerun:{parent_run_id}:{kind}:{hash}`, the run_key of a rerun the operator did not key."""
    return f"rerun:{parent_run_id}:{_kind(kind)}:{task_set_hash(plan)}"


def check_rerun_allowed(kind: RerunKind | str, parent_state: RunState | str) -> None:
    """Refuse with `invalid_transition` when the parent's state does not allow this rerun."""
    kind = _kind(kind)
    parent_state = RunState(parent_state)
    allowed = RERUN_ALLOWED_PARENT_STATES[kind]
    if parent_state in allowed:
        return
    if kind == RerunKind.FROM_FAILURE and parent_state == RunState.SUCCEEDED:
        hint = "nothing failed in it; use --all to run it again, or --select for a part of it"
    else:
        hint = (
            "wait until it has finished (`arcod runs show RUN`), "
            "or cancel it with `arcod cancel RUN`"
        )
    allowed_names = sorted(str(s) for s in allowed)
    raise ArcodError(
        INVALID_TRANSITION,
        f"cannot rerun {kind} a {parent_state} run: {kind} needs a parent that is "
        f"{' or '.join(allowed_names)}; {hint}",
        {"kind": str(kind), "parent_state": str(parent_state), "allowed": allowed_names},
    )
