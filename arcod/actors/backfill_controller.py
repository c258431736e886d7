"""The backfill controller: turns a backfill into chunk runs, lazily, as slots free up.

It reacts to events, never polls:
- `CreateBackfill`: validate everything (core `prepare_backfill`), honour `--request-id`,
  store the backfill (selector, counts, layout; never a partition list) at version 1 and
  wake itself to plan the first chunks.
- `RunFinished` of a chunk run (from the dispatcher): record the chunk's outcome and its
  partitions' outcomes in counters, plan the next chunks at once, detect completion.
- `TransitionBackfill` (pause, resume, cancel): core `decide_transition` decides; cancel
  sends `CancelRun` for every active chunk run and ends CANCELED when none is left.
- `RetryFailedBackfill`: a child backfill over exactly what did not succeed.
- `PlanChunks` / `ResumeBackfills`: planning passes it sends itself (after a budget-limited
  pass, after creation, after every start).

Planning chunk i is one transaction: compute its partitions by arithmetic (core
`chunk_slice` + `selector_slice`), leave out what `--reprocess` says (reading status rows of
that chunk's keys only), build the plan, insert the run with run_key
`backfill:{id}:chunk:{i}` and the `backfill_chunks` row (primary key (backfill, i): no chunk is
planned twice), and send `RunQueued` to the dispatcher. At most `max_concurrency` chunk runs
of a backfill are active; the dispatcher's `max_concurrent_runs` caps all runs. One pass plans
at most `PLAN_BUDGET` partitions + tasks, then continues in a new transaction, so the writer is
never held long and planning memory stays O(max_concurrency x chunk_size).
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import structlog

from arcod.actors.backfill_messages import (
    CreateBackfill,
    PlanChunks,
    ResumeBackfills,
    RetryFailedBackfill,
    TransitionBackfill,
)
from arcod.actors.planner import new_run_id
from arcod.actors.run_messages import CancelRun, RunFinished, RunQueued
from arcod.actors.runtime import Actor, Outcome
from arcod.core import errors
from arcod.core.backfill_chunks import (
    ChunkState,
    Reprocess,
    chunk_run_key,
    chunk_state_for_run,
    chunks_to_plan,
    completion_event,
    failed_partitions,
    partition_outcome,
    partitions_to_retry,
    reprocess_decision,
    retry_layout,
    sub_plan,
)
from arcod.core.backfill_request import REQUEST_ID_CONFLICT, check_request_id, prepare_backfill
from arcod.core.backfill_state import (
    BACKFILL_INITIAL_STATE,
    BACKFILL_INITIAL_VERSION,
    BackfillEvent,
    BackfillState,
    apply_backfill_event,
    backfill_not_found,
    check_retry_failed,
    decide_transition,
    is_finished,
)
from arcod.core.canonical import fingerprint
from arcod.core.definitions import Definitions
from arcod.core.errors import ArcodError
from arcod.core.graph import AssetGraph
from arcod.core.partition_status import partition_state
from arcod.core.plan import task_id_for
from arcod.core.planning import build_plan, run_fingerprint
from arcod.store import backfills as store
from arcod.store import runs as runs_store
from arcod.store.backfills import Backfill
from arcod.store.database import Transaction
from arcod.store.definitions_store import assets_decoder

log = structlog.get_logger("arcod.backfill")

PLAN_BUDGET = 5_000  # partitions examined + tasks planned per planning transaction

_EVENT_REASONS = {
    BackfillEvent.ALL_CHUNKS_SUCCEEDED: "every chunk succeeded",
    BackfillEvent.NO_ACTIVE_CHUNKS: "no chunk run is active any more",
}


def new_backfill_id() -> str:
    return f"b-{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(4)}"


def plan_key(bf: Backfill) -> str:
    """Names the exact point a planning pass starts from; see backfill_messages."""
    return f"plan:{bf.backfill_id}:v{bf.state_version}:c{bf.next_chunk}"


def not_found(backfill_id: str) -> ArcodError:
    return backfill_not_found(backfill_id)


def retry_left(bf: Backfill) -> int:
    """What retry-failed would take from `bf` (meaningful once it is finished)."""
    return partitions_to_retry(bf.partitions_total, bf.partitions_planned, bf.partitions_failed,
                               bf.partitions_canceled)


class BackfillController(Actor):
    name = "backfill"
    accepts = (CreateBackfill, TransitionBackfill, RetryFailedBackfill, PlanChunks, ResumeBackfills, RunFinished)

    def __init__(self, current_definitions: Callable[[], Definitions]) -> None:
        self.current_definitions = current_definitions
        self._definitions: dict[str, Any] = {}  # digest -> partitions definition (immutable)
        self._graphs: dict[str, AssetGraph] = {}  # code_version -> asset graph (immutable)

    async def apply(self, tx: Transaction, msg: Any) -> Outcome:
        out = Outcome()
        if isinstance(msg, RunFinished):
            await self._run_finished(tx, msg, out)
        elif isinstance(msg, PlanChunks):
            bf = await store.get_backfill(tx, msg.backfill_id)
            if bf is not None and not is_finished(bf.state):
                await self._advance(tx, bf, out, msg.idem_key)
        elif isinstance(msg, TransitionBackfill):
            out.reply = await self._transition(tx, msg, out)
        elif isinstance(msg, CreateBackfill):
            out.reply = await self._create(tx, msg, out)
        elif isinstance(msg, RetryFailedBackfill):
            out.reply = await self._retry_failed(tx, msg, out)
        elif isinstance(msg, ResumeBackfills):
            rows = await tx.fetch_all("SELECT backfill_id FROM backfills WHERE state IN ('RUNNING', 'CANCELING')")
            out.send.extend(("backfill", PlanChunks(idem_key=f"{msg.idem_key}:{r['backfill_id']}",
                                                    backfill_id=r["backfill_id"])) for r in rows)
        else:
            raise TypeError(f"backfill controller cannot handle {type(msg).__name__}")
        return out

    # ── creation ────────────────────────────────────────────────────────────

    async def _create(self, tx: Transaction, msg: CreateBackfill, out: Outcome) -> dict:
        check_request_id(msg.request_id)
        defs = self.current_definitions()
        as_of = datetime.now(timezone.utc)
        spec = prepare_backfill(
            defs, select=msg.select, upstream=msg.upstream, downstream=msg.downstream, partitions=msg.partitions,
            chunk_size=msg.chunk_size, max_concurrency=msg.max_concurrency, newest_first=msg.newest_first,
            reprocess=msg.reprocess, as_of=as_of)
        request_key = None if msg.request_id is None else f"create:{msg.request_id}"
        if request_key is not None:
            existing = await store.backfill_by_request_key(tx, request_key)
            if existing is not None:
                if existing.fingerprint != spec.fingerprint:
                    raise ArcodError(
                        REQUEST_ID_CONFLICT,
                        f"request id {msg.request_id!r} already created backfill {existing.backfill_id} from a "
                        "different request; repeat the original request, or use another request id",
                        {"request_id": msg.request_id, "existing_backfill_id": existing.backfill_id,
                         "existing_fingerprint": existing.fingerprint, "requested_fingerprint": spec.fingerprint},
                    )
                return {**store.backfill_dict(existing), "created": False}
        backfill_id = new_backfill_id()
        digest = await store.save_definition(tx, defs.partitions[spec.definition])
        layout = spec.layout
        bf = Backfill(
            backfill_id=backfill_id, request_key=request_key, request_id=msg.request_id,
            fingerprint=spec.fingerprint, state=str(BACKFILL_INITIAL_STATE), state_version=BACKFILL_INITIAL_VERSION,
            assets=spec.assets, definition=spec.definition, definition_digest=digest, selector=spec.selector,
            as_of=as_of.isoformat(), selector_count=spec.partitions_total, span_lo=0, span_hi=spec.partitions_total,
            explicit_count=0, partitions_total=spec.partitions_total, chunk_size=spec.chunk_size,
            chunks_total=layout.chunks_total, max_concurrency=spec.max_concurrency, newest_first=spec.newest_first,
            reprocess=str(spec.reprocess), code_version=defs.code_version, parent_backfill_id=None,
            root_backfill_id=backfill_id,
        )
        await store.insert_backfill(tx, bf, msg)
        await store.log_transition(tx, backfill_id, bf.state_version, None, bf.state,
                                   msg.request_id or msg.idem_key, "created")
        out.send.append(("backfill", PlanChunks(idem_key=plan_key(bf), backfill_id=backfill_id)))
        log.info("backfill created", backfill_id=backfill_id, partitions=bf.partitions_total, chunks=bf.chunks_total)
        return {**store.backfill_dict(bf), "created": True}

    # ── planning ────────────────────────────────────────────────────────────

    async def _advance(self, tx: Transaction, bf: Backfill, out: Outcome, cause: str) -> None:
        """Plan what the slots allow (within the budget), then take the event the counts call
        for, and save. Every path that changes a backfill ends here."""
        budget = PLAN_BUDGET
        while chunks_to_plan(bf.state, bf.chunk_counts, bf.max_concurrency) > 0:
            if budget <= 0:
                out.send.append(("backfill", PlanChunks(idem_key=plan_key(bf), backfill_id=bf.backfill_id)))
                break
            budget -= await self._plan_chunk(tx, bf, out)
        event = completion_event(bf.state, bf.chunk_counts)
        if event is not None:
            reason = _EVENT_REASONS.get(event) or (
                f"every chunk finished; {bf.chunks_failed} failed, {bf.chunks_canceled} canceled")
            await self._move(tx, bf, apply_backfill_event(bf.state, event), cause, reason)
        await store.save_progress(tx, bf)

    async def _plan_chunk(self, tx: Transaction, bf: Backfill, out: Outcome) -> int:
        """Plan chunk `bf.next_chunk`; returns its cost against the planning budget."""
        index = bf.next_chunk
        defn = await self._definition(tx, bf.definition_digest)
        members = await store.chunk_members(tx, bf, defn, index)
        skip = await self._reprocess_skips(tx, bf, index, members)
        wanted = [(a, p) for p, assets in members for a in assets if (a, p) not in skip]
        n = len(members)
        first, last = members[0][0], members[-1][0]
        bf.next_chunk += 1
        bf.partitions_planned += n
        if not wanted:
            await store.insert_chunk(tx, backfill_id=bf.backfill_id, chunk_index=index, state=ChunkState.SKIPPED,
                                     run_id=None, partitions=n, first_partition=first, last_partition=last, tasks=0,
                                     partitions_skipped=n, finished=True)
            bf.count_chunk(ChunkState.SKIPPED)
            bf.partitions_skipped += n
            return n
        with_tasks = {p for _, p in wanted}
        keys = [p for p, _ in members if p in with_tasks]
        assets = sorted({a for a, _ in wanted})
        graph = await self._graph(tx, bf.code_version)
        plan = sub_plan(build_plan(graph, assets, keys, assets), [task_id_for(a, p) for a, p in wanted])
        taken = await tx.fetch_one("SELECT run_id FROM runs WHERE run_key = ?", (chunk_run_key(bf.backfill_id, index),))
        if taken is not None:  # cannot happen through the API (the prefix is reserved); say so if it does
            raise ArcodError(errors.INTERNAL, f"chunk {index} of backfill {bf.backfill_id}: its run key is already "
                             f"held by run {taken['run_id']}", {"run_id": taken["run_id"]})
        run_id = new_run_id()
        selection = {"definition": bf.definition, "backfill_id": bf.backfill_id, "chunk_index": index,
                     "first": first, "last": last, "partitions": n}
        await runs_store.insert_run(
            tx, run_id=run_id, run_key=chunk_run_key(bf.backfill_id, index),
            fingerprint=run_fingerprint(assets, {"backfill_id": bf.backfill_id, "chunk_index": index}, {}),
            code_version=bf.code_version, plan=plan, request={"backfill_id": bf.backfill_id, "chunk_index": index},
            partition_selection=selection, tags={}, backfill_id=bf.backfill_id, chunk_index=index,
        )
        await store.insert_chunk(tx, backfill_id=bf.backfill_id, chunk_index=index, state=ChunkState.RUNNING,
                                 run_id=run_id, partitions=n, first_partition=first, last_partition=last,
                                 tasks=len(plan.tasks), partitions_skipped=n - len(with_tasks), finished=False)
        bf.partitions_skipped += n - len(with_tasks)
        out.send.append(("dispatcher", RunQueued(idem_key=f"queued:{run_id}", run_id=run_id)))
        return n + len(plan.tasks)

    async def _reprocess_skips(self, tx: Transaction, bf: Backfill, index: int,
                               members: list[tuple[str, tuple[str, ...]]]) -> set[tuple[str, str]]:
        """The (asset, partition) pairs of the selector part of a chunk that `--reprocess`
        leaves out. Listed partitions of a retry child are always taken: they are what failed."""
        if bf.reprocess == Reprocess.ALL:
            return set()
        listed = max(0, min(bf.explicit_count - index * bf.chunk_size, len(members)))
        keys = [p for p, _ in members[listed:]]
        if not keys:
            return set()
        rows = await store.status_rows_for(tx, bf.assets, keys)
        return {(a, p) for p in keys for a in bf.assets
                if not reprocess_decision(bf.reprocess, partition_state(rows.get((a, p)))).take}

    # ── chunk outcomes ──────────────────────────────────────────────────────

    async def _run_finished(self, tx: Transaction, msg: RunFinished, out: Outcome) -> None:
        chunk = await tx.fetch_one("SELECT backfill_id, chunk_index, state FROM backfill_chunks WHERE run_id = ?",
                                   (msg.run_id,))
        if chunk is None or chunk["state"] != ChunkState.RUNNING:
            return  # not a chunk run, or already recorded
        bf = await store.get_backfill(tx, chunk["backfill_id"])
        by_partition: dict[str, list[str]] = {}
        for row in await tx.fetch_all("SELECT partition, state FROM tasks WHERE run_id = ?", (msg.run_id,)):
            by_partition.setdefault(row["partition"], []).append(row["state"])
        outcomes = Counter(str(partition_outcome(states)) for states in by_partition.values())
        state = chunk_state_for_run(msg.state)
        await store.finish_chunk(tx, bf.backfill_id, chunk["chunk_index"], state, dict(outcomes))
        bf.count_chunk(state)
        bf.count_partitions(dict(outcomes))
        log.info("chunk finished", backfill_id=bf.backfill_id, chunk=chunk["chunk_index"], state=str(state))
        await self._advance(tx, bf, out, msg.idem_key)

    # ── operator transitions ────────────────────────────────────────────────

    async def _move(self, tx: Transaction, bf: Backfill, new_state: BackfillState | str, request_id: str,
                    reason: str) -> None:
        """Apply one transition: version + 1, logged with who asked and why."""
        from_state = bf.state
        bf.state = str(new_state)
        bf.state_version += 1
        if is_finished(bf.state):
            bf.finished_at = runs_store.now_iso()
        await store.log_transition(tx, bf.backfill_id, bf.state_version, from_state, bf.state, request_id, reason)
        log.info("backfill transition", backfill_id=bf.backfill_id, version=bf.state_version,
                 from_state=from_state, to_state=bf.state, reason=reason)

    async def _transition(self, tx: Transaction, msg: TransitionBackfill, out: Outcome) -> dict:
        bf = await store.get_backfill(tx, msg.backfill_id)
        if bf is None:
            raise not_found(msg.backfill_id)
        previous = bf.state
        decision = decide_transition(bf.state, bf.state_version, msg.action, msg.expect_version,
                                     retryable=retry_left(bf) > 0 if is_finished(bf.state) else None)
        if decision.changed:
            await self._move(tx, bf, decision.new_state, msg.request_id or msg.idem_key, f"{msg.action} requested")
            if bf.state == BackfillState.CANCELING:
                rows = await tx.fetch_all(
                    "SELECT run_id FROM backfill_chunks WHERE backfill_id = ? AND state = ? ORDER BY chunk_index",
                    (bf.backfill_id, ChunkState.RUNNING))
                out.send.extend(("dispatcher", CancelRun(idem_key=f"backfill-cancel:{r['run_id']}", run_id=r["run_id"]))
                                for r in rows)
            await self._advance(tx, bf, out, msg.request_id or msg.idem_key)
        return {"backfill_id": bf.backfill_id, "state": bf.state, "state_version": bf.state_version,
                "changed": decision.changed, "previous_state": previous}

    # ── retry-failed ────────────────────────────────────────────────────────

    async def _retry_failed(self, tx: Transaction, msg: RetryFailedBackfill, out: Outcome) -> dict:
        check_request_id(msg.request_id)
        parent = await store.get_backfill(tx, msg.backfill_id)
        if parent is None:
            raise not_found(msg.backfill_id)
        check_retry_failed(parent.backfill_id, parent.state, retry_left(parent))
        request_key = f"retry:{parent.backfill_id}:{msg.request_id or ''}"
        existing = await store.backfill_by_request_key(tx, request_key)
        if existing is not None:
            return {**store.backfill_dict(existing), "created": False}
        failed_chunks = await tx.fetch_all(
            "SELECT chunk_index, run_id, partitions_failed + partitions_canceled AS n FROM backfill_chunks"
            " WHERE backfill_id = ? AND state IN ('FAILED', 'CANCELED') ORDER BY chunk_index", (parent.backfill_id,))
        listed = sum(r["n"] for r in failed_chunks)
        rl = retry_layout(parent.layout, parent.next_chunk, listed)
        layout = rl.layout(parent.chunk_size, parent.newest_first)
        if layout.partitions_total == 0:  # the counters said otherwise above; refuse all the same
            check_retry_failed(parent.backfill_id, parent.state, 0)
        child_id = new_backfill_id()
        child = Backfill(
            backfill_id=child_id, request_key=request_key, request_id=msg.request_id,
            fingerprint=fingerprint({"retry_failed_of": parent.backfill_id, "request_id": msg.request_id}),
            state=str(BACKFILL_INITIAL_STATE), state_version=BACKFILL_INITIAL_VERSION, assets=parent.assets,
            definition=parent.definition, definition_digest=parent.definition_digest, selector=parent.selector,
            as_of=parent.as_of, selector_count=parent.selector_count, span_lo=rl.span_lo, span_hi=rl.span_hi,
            explicit_count=layout.explicit_count, partitions_total=layout.partitions_total,
            chunk_size=parent.chunk_size, chunks_total=layout.chunks_total, max_concurrency=parent.max_concurrency,
            newest_first=parent.newest_first, reprocess=parent.reprocess, code_version=parent.code_version,
            parent_backfill_id=parent.backfill_id, root_backfill_id=parent.root_backfill_id,
        )
        await store.insert_backfill(tx, child, msg)
        defn = await self._definition(tx, parent.definition_digest)
        position = 0
        for row in failed_chunks:
            members = await store.chunk_members(tx, parent, defn, row["chunk_index"])
            tasks = await tx.fetch_all("SELECT asset, partition, state FROM tasks WHERE run_id = ?", (row["run_id"],))
            rows = failed_partitions([p for p, _ in members], [(t["asset"], t["partition"], t["state"]) for t in tasks])
            position += await store.insert_targets(tx, child_id, position, rows)
        if position != listed:
            raise RuntimeError(f"backfill {parent.backfill_id}: chunk counters say {listed} partitions did not "
                               f"succeed, its tasks say {position}")
        await store.copy_targets(tx, parent.backfill_id, rl.copy_start, rl.copy_stop, child_id, listed)
        unplanned = layout.partitions_total - listed
        await store.log_transition(
            tx, child_id, child.state_version, None, child.state, msg.request_id or msg.idem_key,
            f"retry-failed of {parent.backfill_id}: {listed} partitions that did not succeed"
            + (f" + {unplanned} never planned" if unplanned else ""))
        out.send.append(("backfill", PlanChunks(idem_key=plan_key(child), backfill_id=child_id)))
        log.info("retry-failed backfill created", backfill_id=child_id, parent=parent.backfill_id,
                 listed=listed, unplanned=unplanned)
        return {**store.backfill_dict(child), "created": True}

    # ── cached immutable inputs ─────────────────────────────────────────────

    async def _definition(self, tx: Transaction, digest: str) -> Any:
        defn = self._definitions.get(digest)
        if defn is None:
            defn = self._definitions[digest] = await store.load_definition(tx, digest)
        return defn

    async def _graph(self, tx: Transaction, code_version: str) -> AssetGraph:
        graph = self._graphs.get(code_version)
        if graph is None:
            row = await tx.fetch_one("SELECT assets FROM code_versions WHERE code_version = ?", (code_version,))
            assets = assets_decoder.decode(row["assets"])
            graph = self._graphs[code_version] = AssetGraph.from_deps({k: a.dep_keys for k, a in assets.items()})
        return graph


def resume_message() -> ResumeBackfills:
    """The message the daemon sends on every start (a fresh key each start)."""
    return ResumeBackfills(idem_key=f"backfills-started:{uuid.uuid4().hex}")
