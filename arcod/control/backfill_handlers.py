"""Backfill requests: create (or dry-run), pause/resume/cancel, retry-failed, and the history
reads (list, show, chunks, partitions).

Changes are messages to the backfill controller (the reply comes once committed). Reads go to
the store and cost what they show: `show` reads one row and the transition log (counters on
the row, not a scan), a page of chunks or partitions costs O(page) by arithmetic -- listing by
state walks only the chunks whose counters say they hold that state. A dry-run is a read: it
validates exactly as creation does and creates nothing, not even an event row.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from arcod.actors.backfill_messages import CreateBackfill, RetryFailedBackfill, TransitionBackfill
from arcod.control import protocol as p
from arcod.core.backfill_chunks import (
    DRY_RUN_CHUNKS,
    ChunkState,
    Reprocess,
    backfill_progress,
    chunk_of_position,
    live_partition_state,
    progress_dict,
    reprocess_decision,
    skipped_by_history,
)
from arcod.core.backfill_request import check_request_id, prepare_backfill
from arcod.core.backfill_state import BackfillState, backfill_not_found
from arcod.core.partition_status import partition_state
from arcod.core.partitions import format_selector
from arcod.store import backfills as store

if TYPE_CHECKING:
    from arcod.daemon import Daemon

# Which per-chunk counter column shows that a finished or active chunk holds partitions in a state.
_STATE_COUNTER = {
    ChunkState.SUCCEEDED: "partitions_succeeded > 0",
    ChunkState.FAILED: "partitions_failed > 0",
    ChunkState.CANCELED: "partitions_canceled > 0",
    ChunkState.SKIPPED: "partitions_skipped > 0",
    ChunkState.RUNNING: "state = 'RUNNING'",
}


class BackfillHandlers:
    daemon: Daemon

    TABLE = {
        p.BackfillCreate: "backfill_create",
        p.BackfillList: "backfill_list",
        p.BackfillShow: "backfill_show",
        p.BackfillChunks: "backfill_chunks",
        p.BackfillPartitions: "backfill_partitions",
        p.BackfillTransition: "backfill_transition",
        p.BackfillRetryFailed: "backfill_retry_failed",
    }

    # ── changes ─────────────────────────────────────────────────────────────

    async def backfill_create(self, req: p.BackfillCreate) -> dict:
        if req.dry_run:
            return await self._dry_run(req)
        msg = CreateBackfill(
            idem_key=f"req:{uuid.uuid4().hex}", select=tuple(req.select), upstream=req.upstream,
            downstream=req.downstream, partitions=req.partitions, chunk_size=req.chunk_size,
            max_concurrency=req.max_concurrency, newest_first=req.newest_first, reprocess=req.reprocess,
            request_id=req.request_id,
        )
        return await self.daemon.system.submit("backfill", msg)

    async def backfill_transition(self, req: p.BackfillTransition) -> dict:
        check_request_id(req.request_id)
        # With a request id, the key covers the whole request: a retried request replays the
        # recorded answer, a different request under the same id is a new request.
        key = (f"req:backfill:{req.backfill_id}:{req.action}:{req.expect_version}:{req.request_id}"
               if req.request_id else f"req:{uuid.uuid4().hex}")
        msg = TransitionBackfill(idem_key=key, backfill_id=req.backfill_id, action=req.action,
                                 expect_version=req.expect_version, request_id=req.request_id)
        return await self.daemon.system.submit("backfill", msg)

    async def backfill_retry_failed(self, req: p.BackfillRetryFailed) -> dict:
        msg = RetryFailedBackfill(idem_key=f"req:{uuid.uuid4().hex}", backfill_id=req.backfill_id,
                                  request_id=req.request_id)
        return await self.daemon.system.submit("backfill", msg)

    async def _dry_run(self, req: p.BackfillCreate) -> dict:
        """What `create` would do, decided exactly as it would be, without storing anything.

        Counts for the whole selection come from status rows (bounded by history): every
        (asset, partition) without a row is MISSING, which every reprocess mode takes.
        """
        check_request_id(req.request_id)
        defs = self.daemon.definitions
        as_of = datetime.now(timezone.utc)
        spec = prepare_backfill(
            defs, select=req.select, upstream=req.upstream, downstream=req.downstream, partitions=req.partitions,
            chunk_size=req.chunk_size, max_concurrency=req.max_concurrency, newest_first=req.newest_first,
            reprocess=req.reprocess, as_of=as_of)
        defn = defs.partitions[spec.definition]
        layout = spec.layout
        pairs_total = spec.partitions_total * len(spec.assets)
        skipped: Counter[str] = Counter()
        skipped_partitions = 0
        if spec.reprocess != Reprocess.ALL:
            rows = await store.status_rows_for(self.daemon.db, spec.assets)
            # One selector test per row that ever ran: off the event loop, it may be 100,000.
            skipped, skipped_partitions = await anyio.to_thread.run_sync(
                skipped_by_history, spec.reprocess, spec.selector, defn, spec.assets, rows, as_of,
                limiter=self.daemon.cpu_limiter())
        bf = store.Backfill(
            backfill_id="(dry-run)", request_key=None, request_id=req.request_id, fingerprint=spec.fingerprint,
            state="", state_version=0, assets=spec.assets, definition=spec.definition, definition_digest="",
            selector=spec.selector, as_of=as_of.isoformat(), selector_count=spec.partitions_total, span_lo=0,
            span_hi=spec.partitions_total, explicit_count=0, partitions_total=spec.partitions_total,
            chunk_size=spec.chunk_size, chunks_total=layout.chunks_total, max_concurrency=spec.max_concurrency,
            newest_first=spec.newest_first, reprocess=str(spec.reprocess), code_version=defs.code_version,
            parent_backfill_id=None, root_backfill_id="")
        chunks = []
        for index in range(min(DRY_RUN_CHUNKS, layout.chunks_total)):
            members = await store.chunk_members(self.daemon.db, bf, defn, index)
            keys = [k for k, _ in members]
            rows = ({} if spec.reprocess == Reprocess.ALL
                    else await store.status_rows_for(self.daemon.db, spec.assets, keys))
            entries = []
            for key in keys:
                tasks = []
                for asset in spec.assets:
                    row = rows.get((asset, key))
                    status = partition_state(row)
                    decision = reprocess_decision(spec.reprocess, status)
                    tasks.append({"asset": asset, "status": status, "decision": "run" if decision.take else "skip",
                                  "reason": decision.reason})
                taken = sum(1 for t in tasks if t["decision"] == "run")
                verdict = "run" if taken == len(tasks) else "skip" if taken == 0 else "partial"
                reasons = sorted({t["reason"] for t in tasks})
                entries.append({"partition": key, "decision": verdict, "reason": "; ".join(reasons), "tasks": tasks})
            chunks.append({"chunk_index": index, "keys": keys, "partitions": entries})
        return {
            "dry_run": True,
            "partitions_total": spec.partitions_total,
            "chunk_size": spec.chunk_size,
            "chunks_total": layout.chunks_total,
            "max_concurrency": spec.max_concurrency,
            "assets": list(spec.assets),
            "definition": spec.definition,
            "partitions": format_selector(spec.selector),
            "newest_first": spec.newest_first,
            "reprocess": str(spec.reprocess),
            "tasks_total": pairs_total - sum(skipped.values()),
            "counts": {
                "partitions": {"run": spec.partitions_total - skipped_partitions, "skip": skipped_partitions},
                "tasks": {"run": pairs_total - sum(skipped.values()), "skip": sum(skipped.values())},
                "skip_reasons": dict(sorted(skipped.items())),
            },
            "chunks": chunks,
        }

    # ── reads ───────────────────────────────────────────────────────────────

    async def _backfill_or_404(self, backfill_id: str) -> store.Backfill:
        bf = await store.get_backfill(self.daemon.db, backfill_id)
        if bf is None:
            raise backfill_not_found(backfill_id)
        return bf

    @staticmethod
    def _with_progress(bf: store.Backfill) -> dict:
        """The backfill's document with `progress` (finished and succeeded kept apart)."""
        out = store.backfill_dict(bf)
        started = datetime.fromisoformat(bf.created_at)
        ended = datetime.fromisoformat(bf.finished_at) if bf.finished_at else datetime.now(timezone.utc)
        outcomes = {ChunkState.SUCCEEDED: bf.partitions_succeeded, ChunkState.FAILED: bf.partitions_failed,
                    ChunkState.CANCELED: bf.partitions_canceled, ChunkState.SKIPPED: bf.partitions_skipped}
        prog = backfill_progress(bf.partitions_total, outcomes, (ended - started).total_seconds(),
                                 bf.state == BackfillState.RUNNING)
        out["progress"] = progress_dict(prog)
        return out

    async def _bf_definition(self, digest: str) -> Any:
        cache = self.__dict__.setdefault("_backfill_definitions", {})
        if digest not in cache:
            cache[digest] = await store.load_definition(self.daemon.db, digest)
        return cache[digest]

    async def backfill_list(self, req: p.BackfillList) -> dict:
        where, params = ("WHERE state = ?", (req.state,)) if req.state else ("", ())
        rows = await self.daemon.db.read_all(f"{store.SELECT_BACKFILL} {where} ORDER BY seq DESC LIMIT ?",
                                             (*params, req.limit))
        return {"backfills": [self._with_progress(store.backfill_from_row(r)) for r in rows]}

    async def backfill_show(self, req: p.BackfillShow) -> dict:
        bf = await self._backfill_or_404(req.backfill_id)
        out = self._with_progress(bf)
        out["transitions"] = await store.transitions(self.daemon.db, bf.backfill_id)
        return out

    async def backfill_chunks(self, req: p.BackfillChunks) -> dict:
        bf = await self._backfill_or_404(req.backfill_id)
        db = self.daemon.db
        if req.state is None or req.state == ChunkState.PENDING:
            first = (bf.next_chunk if req.state else 0) + req.offset
            indexes = range(first, min(first + req.limit, bf.chunks_total))
            rows = await db.read_all(
                f"SELECT {store.CHUNK_COLUMNS} FROM {store.CHUNK_FROM} WHERE c.backfill_id = ?"
                " AND c.chunk_index >= ? AND c.chunk_index < ?", (bf.backfill_id, indexes.start, indexes.stop))
            planned = {r["chunk_index"]: store.chunk_dict(r) for r in rows}
            chunks = [planned.get(i) or await self._pending_chunk(bf, i) for i in indexes]
        else:
            rows = await db.read_all(
                f"SELECT {store.CHUNK_COLUMNS} FROM {store.CHUNK_FROM} WHERE c.backfill_id = ? AND c.state = ?"
                " ORDER BY c.chunk_index LIMIT ? OFFSET ?", (bf.backfill_id, req.state, req.limit, req.offset))
            chunks = [store.chunk_dict(r) for r in rows]
        return {"backfill_id": bf.backfill_id, "state": bf.state, "chunks_total": bf.chunks_total,
                "counts": {str(k): v for k, v in bf.chunk_counts.by_state().items()}, "chunks": chunks}

    async def _pending_chunk(self, bf: store.Backfill, index: int) -> dict:
        """A chunk not planned yet: its ends by arithmetic, two keys whatever its size."""
        defn = await self._bf_definition(bf.definition_digest)
        start = index * bf.chunk_size
        stop = min(start + bf.chunk_size, bf.partitions_total)
        (first, _), = await store.members_at(self.daemon.db, bf, defn, start, start + 1)
        (last, _), = await store.members_at(self.daemon.db, bf, defn, stop - 1, stop)
        return {"chunk_index": index, "state": str(ChunkState.PENDING), "run_id": None, "run_key": None,
                "run_state": None, "partitions": stop - start, "first_partition": first, "last_partition": last,
                "tasks": None, "counts": {}, "planned_at": None, "started_at": None, "finished_at": None}

    async def backfill_partitions(self, req: p.BackfillPartitions) -> dict:
        bf = await self._backfill_or_404(req.backfill_id)
        defn = await self._bf_definition(bf.definition_digest)
        if req.state is None or req.state == ChunkState.PENDING:
            base = min(bf.next_chunk * bf.chunk_size, bf.partitions_total) if req.state else 0
            start = min(base + req.offset, bf.partitions_total)
            stop = min(start + req.limit, bf.partitions_total)
            members = await store.members_at(self.daemon.db, bf, defn, start, stop)
            entries: list[dict] = []
            position = start
            while position < stop:  # one chunk at a time: one task query per planned chunk
                index = chunk_of_position(bf.layout, position)
                chunk_stop = min((index + 1) * bf.chunk_size, stop)
                part = members[position - start:chunk_stop - start]
                entries.extend(await self._partition_entries(bf, index, part))
                position = chunk_stop
        else:
            entries = await self._partitions_in_state(bf, defn, ChunkState(req.state), req.offset, req.limit)
        return {"backfill_id": bf.backfill_id, "state": bf.state, "partitions_total": bf.partitions_total,
                "counts": store.backfill_dict(bf)["counts"]["partitions"], "partitions": entries}

    async def _partition_entries(self, bf: store.Backfill, index: int,
                                 members: list[tuple[str, tuple[str, ...]]]) -> list[dict]:
        """The state of each of `members` (all in chunk `index`), from its chunk's run."""
        if index >= bf.next_chunk:
            return [{"partition": k, "state": str(ChunkState.PENDING), "chunk_index": index, "run_id": None,
                     "tasks": {a: None for a in assets}} for k, assets in members]
        chunk = await self.daemon.db.read_one(
            "SELECT state, run_id FROM backfill_chunks WHERE backfill_id = ? AND chunk_index = ?",
            (bf.backfill_id, index))
        tasks: dict[str, dict[str, str]] = {}
        if chunk["run_id"] is not None:
            keys = [k for k, _ in members]
            for i in range(0, len(keys), 400):
                batch = keys[i:i + 400]
                rows = await self.daemon.db.read_all(
                    f"SELECT asset, partition, state FROM tasks WHERE run_id = ? AND partition IN ({','.join('?' * len(batch))})",
                    (chunk["run_id"], *batch))
                for r in rows:
                    tasks.setdefault(r["partition"], {})[r["asset"]] = r["state"]
        done = chunk["state"] != ChunkState.RUNNING
        return [{"partition": k, "state": str(live_partition_state(tasks.get(k, {}).values(), done)),
                 "chunk_index": index, "run_id": chunk["run_id"], "tasks": tasks.get(k, {})} for k, _ in members]

    async def _partitions_in_state(self, bf: store.Backfill, defn: Any, state: ChunkState, offset: int,
                                   limit: int) -> list[dict]:
        """Partitions in `state`, in sequence order: only chunks whose counters say they hold
        some are read, one chunk at a time, until the page is full."""
        out: list[dict] = []
        skip = offset
        after = -1
        while len(out) < limit:
            rows = await self.daemon.db.read_all(
                f"SELECT chunk_index FROM backfill_chunks WHERE backfill_id = ? AND chunk_index > ?"
                f" AND {_STATE_COUNTER[state]} ORDER BY chunk_index LIMIT 64", (bf.backfill_id, after))
            if not rows:
                break
            for row in rows:
                after = row["chunk_index"]
                members = await store.chunk_members(self.daemon.db, bf, defn, after)
                for entry in await self._partition_entries(bf, after, members):
                    if entry["state"] != state:
                        continue
                    if skip:
                        skip -= 1
                        continue
                    out.append(entry)
                    if len(out) >= limit:
                        return out
        return out

