"""The planner: turns a run or rerun request into one persisted run with its plan.

Everything a request can be refused for is checked before the run_key is looked at, and
the run row (which holds the UNIQUE run_key) is inserted last, in the same transaction, so a
refused request never reserves its key and two concurrent requests with one key create one
run (the runtime applies messages one transaction at a time; the UNIQUE constraint is the
backstop).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgspec

from arcod.actors.run_messages import PlanRerun, PlanRun, RunQueued
from arcod.actors.runtime import Actor, Outcome
from arcod.core import errors
from arcod.core.definitions import Definitions
from arcod.core.errors import ArcodError
from arcod.core.plan import Plan
from arcod.core.planning import build_plan, run_fingerprint
from arcod.core.rerun import (
    check_rerun_allowed,
    derived_rerun_key,
    rerun_all,
    rerun_from_failure,
    rerun_subset,
    resolve_subset,
)
from arcod.core.selection import SelectionRequest, resolve_request
from arcod.store import runs as runs_store
from arcod.store.database import Transaction
from arcod.store.definitions_store import assets_decoder

MAX_RUN_TASKS = 10_000
MAX_RUN_KEY_LENGTH = 256
# Chunk run keys are the backfill controller's: an operator run holding one would make the
# chunk impossible to plan (SPEC §6: chunk i is exactly one run with that key).
RESERVED_RUN_KEY_PREFIXES = ("backfill:",)


def new_run_id() -> str:
    return f"r-{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(4)}"


def check_run_key(run_key: str | None) -> None:
    if run_key is None:
        return
    if not run_key or len(run_key) > MAX_RUN_KEY_LENGTH or not run_key.isprintable() or run_key != run_key.strip():
        raise ArcodError(
            errors.BAD_REQUEST,
            f"a run key is 1 to {MAX_RUN_KEY_LENGTH} printable characters without surrounding space",
            {"run_key": run_key[:300] if run_key else run_key},
        )
    if run_key.startswith(RESERVED_RUN_KEY_PREFIXES):
        raise ArcodError(
            errors.BAD_REQUEST,
            f"run keys starting with {' or '.join(repr(p) for p in RESERVED_RUN_KEY_PREFIXES)} are reserved "
            "for backfill chunk runs; choose another key",
            {"run_key": run_key},
        )


def run_partitions(defs: Definitions, assets: tuple[str, ...], partition: str | None,
                   partitions: str | None, as_of: datetime) -> tuple[list[str] | None, frozenset[str], Any]:
    """The partition keys of a run over `assets`, the partitioned subset, and the canonical selector.

    All partitioned assets must share one definition (until partition mappings land).
    """
    from arcod.core.partitions import KeysSelector, parse_selector, pin_as_of, selector_count, selector_slice

    by_def: dict[str, list[str]] = {}
    for key in assets:
        name = defs.assets[key].partitions
        if name is not None:
            by_def.setdefault(name, []).append(key)
    partitioned = frozenset(k for ks in by_def.values() for k in ks)
    if partition is not None and partitions is not None:
        raise ArcodError(errors.BAD_REQUEST, "give --partition KEY or --partitions SEL, not both")
    wanted = partition if partition is not None else partitions
    if len(by_def) > 1:
        raise ArcodError(
            errors.MIXED_PARTITIONS,
            "the selected partitioned assets use different partitions definitions: "
            + "; ".join(f"{name}: {', '.join(keys)}" for name, keys in sorted(by_def.items()))
            + ". Select assets of one definition per run.",
            {"definitions": {name: keys for name, keys in sorted(by_def.items())}},
        )
    if not by_def:
        if wanted is not None:
            raise ArcodError(
                errors.PARTITION_ERROR,
                "none of the selected assets is partitioned; drop --partition/--partitions",
                {"assets": list(assets)},
            )
        return None, partitioned, None
    (name, keys), = by_def.items()
    if wanted is None:
        raise ArcodError(
            errors.PARTITION_ERROR,
            f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} partitioned by {name!r}; "
            "pass --partition KEY or --partitions SEL (e.g. 2024-01-01..2024-01-31)",
            {"definition": name, "assets": keys},
        )
    defn = defs.partitions[name]
    if partition is not None:
        if "," in partition or ".." in partition:  # never inside a key (SPEC §3)
            raise ArcodError(
                errors.PARTITION_ERROR,
                f"--partition takes one key, and {partition!r} is a list or a range: "
                f"use --partitions {partition!r}",
                {"partition": partition, "definition": name})
        defn.index(partition, as_of)  # raises a partition_error naming the expected form
        selector = KeysSelector(keys=(partition,))
    else:
        selector = parse_selector(partitions, defn)
    # The request is fingerprinted as given (canonical, not pinned): repeating a keyed
    # request after a new window closed returns the run it made, not a conflict. The run's
    # partitions are the pinned ones: windows that appear later are not silently added.
    requested = selector
    selector = pin_as_of(selector, defn, as_of)
    count = selector_count(selector, defn, as_of)
    if count * len(keys) > MAX_RUN_TASKS:
        raise ArcodError(
            errors.BAD_REQUEST,
            f"this run would have {count * len(keys)} tasks ({count} partitions x {len(keys)} assets), "
            f"more than {MAX_RUN_TASKS}; use `arcod backfill create`, which runs it in chunks",
            {"partitions": count, "assets": len(keys)},
        )
    if count == 0:
        raise ArcodError(errors.EMPTY_SELECTION, f"the partition selection {wanted!r} is empty")
    return selector_slice(selector, defn, 0, count, as_of), partitioned, {"definition": name, "selector": msgspec.to_builtins(requested)}


def run_result(run: dict[str, Any], created: bool) -> dict[str, Any]:
    return {**run, "created": created}


class Planner(Actor):
    name = "planner"
    accepts = (PlanRun, PlanRerun)

    def __init__(self, current_definitions: Callable[[], Definitions]) -> None:
        self.current_definitions = current_definitions

    async def apply(self, tx: Transaction, msg: Any) -> Outcome:
        if isinstance(msg, PlanRun):
            return await self._plan_run(tx, msg)
        if isinstance(msg, PlanRerun):
            return await self._plan_rerun(tx, msg)
        raise TypeError(f"planner cannot handle {type(msg).__name__}")

    async def _keyed(self, tx: Transaction, run_key: str | None, fingerprint: str) -> dict[str, Any] | None:
        """The existing run for `run_key` if the fingerprints match; a conflict if not."""
        if run_key is None:
            return None
        row = await tx.fetch_one("SELECT run_id, fingerprint FROM runs WHERE run_key = ?", (run_key,))
        pruned = None
        if row is None:
            # Retention may have pruned the run; its key stays taken (a key is one run, ever).
            row = pruned = await tx.fetch_one(
                "SELECT run_id, fingerprint, state FROM run_key_tombstones WHERE run_key = ?", (run_key,))
            if row is None:
                return None
        if row["fingerprint"] != fingerprint:
            raise ArcodError(
                errors.RUN_KEY_CONFLICT,
                f"run key {run_key!r} already belongs to run {row['run_id']}, planned from a different "
                "request; repeat the original request, or use another run key",
                {"run_key": run_key, "existing_run_id": row["run_id"],
                 "existing_fingerprint": row["fingerprint"], "requested_fingerprint": fingerprint},
            )
        if pruned is not None:
            return {"run_id": pruned["run_id"], "run_key": run_key, "state": pruned["state"],
                    "fingerprint": pruned["fingerprint"], "pruned": True, "parent_run_id": None,
                    "root_run_id": None, "rerun_kind": None, "backfill_id": None, "tasks": [], "counts": {}}
        return await runs_store.run_with_tasks(tx, row["run_id"])

    async def _plan_run(self, tx: Transaction, msg: PlanRun) -> Outcome:
        check_run_key(msg.run_key)
        defs = self.current_definitions()
        resolution = resolve_request(
            SelectionRequest(select=msg.select, upstream=msg.upstream, downstream=msg.downstream),
            defs.graph, defs.assets,
        )
        as_of = datetime.now(timezone.utc)
        keys, partitioned, partition_selection = run_partitions(
            defs, resolution.keys, msg.partition, msg.partitions, as_of
        )
        fingerprint = run_fingerprint(resolution.keys, partition_selection, msg.tags)
        existing = await self._keyed(tx, msg.run_key, fingerprint)
        if existing is not None:
            return Outcome(reply=run_result(existing, False))
        plan = build_plan(defs.graph, resolution.keys, keys, partitioned)
        run_id = new_run_id()
        await runs_store.insert_run(
            tx, run_id=run_id, run_key=msg.run_key, fingerprint=fingerprint,
            code_version=defs.code_version, plan=plan, request=msg,
            partition_selection=partition_selection, tags=msg.tags,
        )
        run = await runs_store.run_with_tasks(tx, run_id)
        return Outcome(reply=run_result(run, True), send=[("dispatcher", RunQueued(idem_key=f"queued:{run_id}", run_id=run_id))])

    async def _plan_rerun(self, tx: Transaction, msg: PlanRerun) -> Outcome:
        check_run_key(msg.run_key)
        parent = await tx.fetch_one(
            "SELECT run_id, state, root_run_id, code_version, plan, partition_selection, tags FROM runs WHERE run_id = ?",
            (msg.parent_run_id,),
        )
        if parent is None:
            raise ArcodError(errors.NOT_FOUND, f"no run {msg.parent_run_id!r}; see `arcod runs list`",
                             {"what": "run", "id": msg.parent_run_id})
        check_rerun_allowed(msg.kind, parent["state"])
        parent_plan: Plan = runs_store.plan_decoder.decode(parent["plan"])
        if msg.kind == "from_failure":
            states = {r["task_id"]: r["state"] for r in await tx.fetch_all(
                "SELECT task_id, state FROM tasks WHERE run_id = ?", (msg.parent_run_id,))}
            plan = rerun_from_failure(parent_plan, states)
        elif msg.kind == "all":
            plan = rerun_all(parent_plan)
        else:
            plan = await self._subset_plan(tx, msg, parent_plan, parent["code_version"])
        run_key = msg.run_key or derived_rerun_key(msg.parent_run_id, msg.kind, plan)
        tags = msgspec.json.decode(parent["tags"])
        partition_selection = None if parent["partition_selection"] is None else msgspec.json.decode(parent["partition_selection"])
        fingerprint = run_fingerprint(
            sorted({t.asset for t in plan.tasks}),
            {"rerun_of": msg.parent_run_id, "kind": msg.kind, "tasks": sorted(t.task_id for t in plan.tasks)},
            tags,
        )
        existing = await self._keyed(tx, run_key, fingerprint)
        if existing is not None:
            return Outcome(reply=run_result(existing, False))
        run_id = new_run_id()
        await runs_store.insert_run(
            tx, run_id=run_id, run_key=run_key, fingerprint=fingerprint,
            code_version=parent["code_version"], plan=plan, request=msg,
            partition_selection=partition_selection, tags=tags,
            parent_run_id=msg.parent_run_id, root_run_id=parent["root_run_id"], rerun_kind=msg.kind,
        )
        run = await runs_store.run_with_tasks(tx, run_id)
        return Outcome(reply=run_result(run, True), send=[("dispatcher", RunQueued(idem_key=f"queued:{run_id}", run_id=run_id))])

    async def _subset_plan(self, tx: Transaction, msg: PlanRerun, parent_plan: Plan, code_version: str) -> Plan:
        """The selection evaluated within the parent's plan (`core.rerun.resolve_subset`), with
        the labels of the parent's code_version, the definitions it was planned with."""
        row = await tx.fetch_one("SELECT assets FROM code_versions WHERE code_version = ?", (code_version,))
        known = assets_decoder.decode(row["assets"]) if row is not None else {}
        resolution = resolve_subset(
            msg.parent_run_id, parent_plan,
            SelectionRequest(select=msg.select, upstream=msg.upstream, downstream=msg.downstream),
            known, {k: a.dep_keys for k, a in known.items()})
        return rerun_subset(parent_plan, resolution.keys)
