"""Backfills in SQLite: the backfill row with its counters, its chunks, its transition log,
the partitions a retry child lists, and the partitions definitions backfills were made with.

SQL and row shaping only. Every decision (what chunk i holds, which event the counts call
for, which transition applies) is made in `arcod.core` by the controller that calls these.
The counters on the backfill row are what make `backfill show` O(1) on a million
partitions: they are updated in the transaction that plans or finishes a chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from arcod.core.backfill_chunks import (
    ChunkCounts,
    ChunkLayout,
    ChunkSlice,
    ChunkState,
    chunk_keys,
    chunk_slice,
    partition_counts,
    positions_slice,
)
from arcod.core.backfill_request import describe_target
from arcod.core.partitions import AnyPartitionsDefinition, PartitionSelector, format_selector, selector_slice
from arcod.store.database import Database, Transaction
from arcod.store.partitions_store import shape_rows, status_row
from arcod.store.runs import now_iso

definition_decoder = msgspec.json.Decoder(AnyPartitionsDefinition)
selector_decoder = msgspec.json.Decoder(PartitionSelector)
_assets_decoder = msgspec.json.Decoder(tuple[str, ...])


class Backfill(msgspec.Struct, kw_only=True):
    """One `backfills` row. Mutable: the controller moves it, then `save_progress` writes it."""

    backfill_id: str
    request_key: str | None
    request_id: str | None
    fingerprint: str
    state: str
    state_version: int
    assets: tuple[str, ...]
    definition: str
    definition_digest: str
    selector: PartitionSelector
    as_of: str
    selector_count: int
    span_lo: int
    span_hi: int
    explicit_count: int
    partitions_total: int
    chunk_size: int
    chunks_total: int
    max_concurrency: int
    newest_first: bool
    reprocess: str
    code_version: str
    parent_backfill_id: str | None
    root_backfill_id: str
    next_chunk: int = 0
    chunks_succeeded: int = 0
    chunks_failed: int = 0
    chunks_canceled: int = 0
    chunks_skipped: int = 0
    partitions_planned: int = 0
    partitions_succeeded: int = 0
    partitions_failed: int = 0
    partitions_canceled: int = 0
    partitions_skipped: int = 0
    created_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None

    @property
    def layout(self) -> ChunkLayout:
        return ChunkLayout(chunk_size=self.chunk_size, span_lo=self.span_lo, span_hi=self.span_hi,
                           explicit_count=self.explicit_count, newest_first=self.newest_first)

    @property
    def chunk_counts(self) -> ChunkCounts:
        return ChunkCounts(total=self.chunks_total, planned=self.next_chunk, succeeded=self.chunks_succeeded,
                           failed=self.chunks_failed, canceled=self.chunks_canceled, skipped=self.chunks_skipped)

    def count_chunk(self, state: ChunkState) -> None:
        name = f"chunks_{state.lower()}"
        setattr(self, name, getattr(self, name) + 1)

    def count_partitions(self, outcomes: dict[str, int]) -> None:
        for state, n in outcomes.items():
            name = f"partitions_{state.lower()}"
            setattr(self, name, getattr(self, name) + n)

    @property
    def partitions_done(self) -> int:
        return (self.partitions_succeeded + self.partitions_failed + self.partitions_canceled
                + self.partitions_skipped)


_COLUMNS = tuple(Backfill.__struct_fields__)
_JSON_COLUMNS = {"assets", "selector"}
_MUTABLE = (
    "state", "state_version", "next_chunk", "chunks_succeeded", "chunks_failed", "chunks_canceled",
    "chunks_skipped", "partitions_planned", "partitions_succeeded", "partitions_failed",
    "partitions_canceled", "partitions_skipped", "updated_at", "finished_at",
)
SELECT_BACKFILL = f"SELECT {', '.join(_COLUMNS)} FROM backfills"


def backfill_from_row(row: Any) -> Backfill:
    values = {name: row[name] for name in _COLUMNS}
    values["assets"] = _assets_decoder.decode(values["assets"])
    values["selector"] = selector_decoder.decode(values["selector"])
    values["newest_first"] = bool(values["newest_first"])
    return Backfill(**values)


def _readers(reader: Database | Transaction) -> tuple[Any, Any]:
    if isinstance(reader, Database):
        return reader.read_one, reader.read_all
    return reader.fetch_one, reader.fetch_all


async def get_backfill(reader: Database | Transaction, backfill_id: str) -> Backfill | None:
    fetch_one, _ = _readers(reader)
    row = await fetch_one(f"{SELECT_BACKFILL} WHERE backfill_id = ?", (backfill_id,))
    return None if row is None else backfill_from_row(row)


async def backfill_by_request_key(tx: Transaction, request_key: str) -> Backfill | None:
    row = await tx.fetch_one(f"{SELECT_BACKFILL} WHERE request_key = ?", (request_key,))
    return None if row is None else backfill_from_row(row)


async def insert_backfill(tx: Transaction, bf: Backfill, request: Any) -> None:
    now = now_iso()
    bf.created_at = bf.updated_at = now
    values = []
    for name in _COLUMNS:
        value = getattr(bf, name)
        if name in _JSON_COLUMNS:
            value = msgspec.json.encode(value)
        elif name == "newest_first":
            value = int(value)
        values.append(value)
    await tx.execute(
        f"INSERT INTO backfills ({', '.join(_COLUMNS)}, request) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
        (*values, msgspec.json.encode(request)),
    )


async def save_progress(tx: Transaction, bf: Backfill) -> None:
    """Write the state, version, next chunk and counters of `bf` (nothing else ever changes)."""
    bf.updated_at = now_iso()
    await tx.execute(
        f"UPDATE backfills SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE backfill_id = ?",
        (*(getattr(bf, c) for c in _MUTABLE), bf.backfill_id),
    )


async def log_transition(tx: Transaction, backfill_id: str, version: int, from_state: str | None,
                         to_state: str, request_id: str | None, reason: str) -> None:
    await tx.execute(
        "INSERT INTO backfill_transitions (backfill_id, version, from_state, to_state, at, request_id, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (backfill_id, version, from_state, to_state, now_iso(), request_id, reason),
    )


async def transitions(reader: Database | Transaction, backfill_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` transitions, oldest first."""
    _, fetch_all = _readers(reader)
    rows = await fetch_all(
        "SELECT version, from_state, to_state, at, request_id, reason FROM backfill_transitions"
        " WHERE backfill_id = ? ORDER BY version DESC LIMIT ?", (backfill_id, limit))
    return [dict(r) for r in reversed(rows)]


# -- definitions ---------------------------------------------------------------------------------


async def save_definition(tx: Transaction, defn: Any) -> str:
    """Store the definition's snapshot once per content; its digest names it."""
    body = msgspec.json.encode(defn)
    digest = hashlib.sha256(body).hexdigest()[:32]
    await tx.execute("INSERT INTO backfill_definitions (digest, body) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     (digest, body))
    return digest


async def load_definition(reader: Database | Transaction, digest: str) -> Any:
    fetch_one, _ = _readers(reader)
    row = await fetch_one("SELECT body FROM backfill_definitions WHERE digest = ?", (digest,))
    if row is None:
        raise LookupError(f"no stored partitions definition {digest}")
    return definition_decoder.decode(row["body"])


# -- chunks --------------------------------------------------------------------------------------


async def insert_chunk(tx: Transaction, *, backfill_id: str, chunk_index: int, state: str, run_id: str | None,
                       partitions: int, first_partition: str, last_partition: str, tasks: int,
                       partitions_skipped: int, finished: bool) -> None:
    now = now_iso()
    await tx.execute(
        "INSERT INTO backfill_chunks (backfill_id, chunk_index, state, run_id, partitions, first_partition,"
        " last_partition, tasks, partitions_skipped, planned_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (backfill_id, chunk_index, state, run_id, partitions, first_partition, last_partition, tasks,
         partitions_skipped, now, now if finished else None),
    )


async def finish_chunk(tx: Transaction, backfill_id: str, chunk_index: int, state: str,
                       outcomes: dict[str, int]) -> None:
    await tx.execute(
        "UPDATE backfill_chunks SET state = ?, finished_at = ?, partitions_succeeded = ?, partitions_failed = ?,"
        " partitions_canceled = ? WHERE backfill_id = ? AND chunk_index = ?",
        (state, now_iso(), outcomes.get(ChunkState.SUCCEEDED, 0), outcomes.get(ChunkState.FAILED, 0),
         outcomes.get(ChunkState.CANCELED, 0), backfill_id, chunk_index),
    )


CHUNK_COLUMNS = (
    "c.chunk_index, c.state, c.run_id, r.state AS run_state, r.run_key, c.partitions, c.first_partition,"
    " c.last_partition, c.tasks, c.partitions_succeeded, c.partitions_failed, c.partitions_canceled,"
    " c.partitions_skipped, c.planned_at, r.started_at, c.finished_at"
)
CHUNK_FROM = "backfill_chunks c LEFT JOIN runs r ON r.run_id = c.run_id"


def chunk_dict(row: Any) -> dict[str, Any]:
    return {
        "chunk_index": row["chunk_index"],
        "state": row["state"],
        "run_id": row["run_id"],
        "run_key": row["run_key"],
        "run_state": row["run_state"],
        "partitions": row["partitions"],
        "first_partition": row["first_partition"],
        "last_partition": row["last_partition"],
        "tasks": row["tasks"],
        "counts": {
            "SUCCEEDED": row["partitions_succeeded"], "FAILED": row["partitions_failed"],
            "CANCELED": row["partitions_canceled"], "SKIPPED": row["partitions_skipped"],
        },
        "planned_at": row["planned_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


# -- listed partitions of a retry child --------------------------------------------------------


async def insert_targets(tx: Transaction, backfill_id: str, first_position: int,
                         rows: Iterable[tuple[str, Sequence[str]]]) -> int:
    """Store `rows` (partition, assets) at positions from `first_position`; returns how many."""
    batch = [(backfill_id, first_position + i, partition, msgspec.json.encode(list(assets)))
             for i, (partition, assets) in enumerate(rows)]
    await tx.executemany(
        "INSERT INTO backfill_targets (backfill_id, position, partition, assets) VALUES (?, ?, ?, ?)", batch)
    return len(batch)


async def copy_targets(tx: Transaction, from_id: str, start: int, stop: int, to_id: str, to_position: int) -> None:
    """Copy a parent's rows [start, stop) to a child, renumbered from `to_position`."""
    await tx.execute(
        "INSERT INTO backfill_targets (backfill_id, position, partition, assets)"
        " SELECT ?, position - ? + ?, partition, assets FROM backfill_targets"
        " WHERE backfill_id = ? AND position >= ? AND position < ?",
        (to_id, start, to_position, from_id, start, stop),
    )


async def targets(reader: Database | Transaction, backfill_id: str, start: int, stop: int) -> list[tuple[str, tuple[str, ...]]]:
    """Rows [start, stop) as (partition, assets), in position order."""
    if stop <= start:
        return []
    _, fetch_all = _readers(reader)
    rows = await fetch_all(
        "SELECT partition, assets FROM backfill_targets WHERE backfill_id = ? AND position >= ? AND position < ?"
        " ORDER BY position", (backfill_id, start, stop))
    return [(r["partition"], _assets_decoder.decode(r["assets"])) for r in rows]


# -- the contract's JSON ---------------------------------------------------------------------------


def backfill_dict(bf: Backfill) -> dict[str, Any]:
    """A backfill in the SPEC §7 field names, with counts of partitions and chunks by state."""
    chunk_counts = bf.chunk_counts
    partitions = partition_counts(bf.partitions_total, bf.partitions_planned, {
        ChunkState.SUCCEEDED: bf.partitions_succeeded, ChunkState.FAILED: bf.partitions_failed,
        ChunkState.CANCELED: bf.partitions_canceled, ChunkState.SKIPPED: bf.partitions_skipped,
    })
    return {
        "backfill_id": bf.backfill_id,
        "state": bf.state,
        "state_version": bf.state_version,
        "partitions_total": bf.partitions_total,
        "chunk_size": bf.chunk_size,
        "chunks_total": bf.chunks_total,
        "max_concurrency": bf.max_concurrency,
        "parent_backfill_id": bf.parent_backfill_id,
        "root_backfill_id": bf.root_backfill_id,
        "request_id": bf.request_id,
        "assets": list(bf.assets),
        "definition": bf.definition,
        "partitions": format_selector(bf.selector),
        "target": describe_target(bf.selector, bf.layout, bf.selector_count),
        "as_of": bf.as_of,
        "newest_first": bf.newest_first,
        "reprocess": bf.reprocess,
        "code_version": bf.code_version,
        "next_chunk": bf.next_chunk,
        "counts": {
            "partitions": {str(k): v for k, v in partitions.items()},
            "chunks": {str(k): v for k, v in chunk_counts.by_state().items()},
        },
        "created_at": bf.created_at,
        "updated_at": bf.updated_at,
        "finished_at": bf.finished_at,
    }


# -- what a chunk holds, and the status of its pairs -------------------------------------------


async def chunk_members(reader: Database | Transaction, bf: Backfill, defn: Any, chunk_index: int
                        ) -> list[tuple[str, tuple[str, ...]]]:
    """Chunk i's (partition, assets) in chunk order: its stored rows, then selector arithmetic."""
    return await _members(reader, bf, defn, chunk_slice(bf.layout, chunk_index))


async def members_at(reader: Database | Transaction, bf: Backfill, defn: Any, start: int, stop: int
                     ) -> list[tuple[str, tuple[str, ...]]]:
    """(partition, assets) at sequence positions [start, stop), in O(stop - start)."""
    return await _members(reader, bf, defn, positions_slice(bf.layout, start, stop))


async def _members(reader: Database | Transaction, bf: Backfill, defn: Any, piece: ChunkSlice
                   ) -> list[tuple[str, tuple[str, ...]]]:
    explicit = await targets(reader, bf.backfill_id, piece.explicit_start, piece.explicit_stop)
    span = (selector_slice(bf.selector, defn, piece.span_offset, piece.span_limit,
                           datetime.fromisoformat(bf.as_of)) if piece.span_limit else [])
    return chunk_keys(piece, explicit, span, bf.assets)


_IN_BATCH = 400


async def status_rows_for(reader: Database | Transaction, assets: Sequence[str],
                          partitions: Sequence[str] | None = None) -> dict[tuple[str, str], Any]:
    """(asset, partition) -> StatusRow for `assets`, limited to `partitions` when given.

    Without `partitions` this reads every row of the assets: one per partition that ever ran,
    so it is bounded by history, never by the size of a selection.
    """
    _, fetch_all = _readers(reader)
    asset_marks = ",".join("?" * len(assets))
    cols = ("asset, partition, last_materialized_run, last_materialized_at, last_attempt_run,"
            " last_attempt_state, last_attempt_at")
    batches: list[Sequence[str] | None] = (
        [None] if partitions is None else
        [partitions[i:i + _IN_BATCH] for i in range(0, len(partitions), _IN_BATCH)])
    out: dict[tuple[str, str], Any] = {}
    for batch in batches:
        if batch is None:
            rows = await fetch_all(f"SELECT {cols} FROM partition_status WHERE asset IN ({asset_marks})", tuple(assets))
        elif not batch:
            continue
        else:
            rows = await fetch_all(
                f"SELECT {cols} FROM partition_status WHERE asset IN ({asset_marks})"
                f" AND partition IN ({','.join('?' * len(batch))})", (*assets, *batch))
        for asset, row in await shape_rows(rows, lambda r: (r["asset"], status_row(r))):
            out[(asset, row.partition)] = row
    return out
