"""Retention: remove finished runs older than a cutoff, with their tasks, attempts, logs and
the bookkeeping rows that only existed for them (`arcod runs prune`, and once a day in the
daemon when `retention_days` is set).

What may go is decided by `arcod.core.retention` (finished, old, not busy, lineage, backfill
families all-or-nothing); this module loads the closed universe that decision needs, deletes
in batches, and removes log directories after the commit.

Batches. Each batch is one write transaction over up to `BATCH_ROOTS` lineage groups (plus
whatever backfill families they touch), so the writer lock is held for a bounded time and the
actors keep moving between batches. The decision is re-made inside each transaction: a rerun
of an old run planned a moment before is seen, and the foreign keys (parent_run_id,
backfill_chunks.run_id) are the backstop. A crash between a batch's commit and the removal of
its log directories leaves directories without runs; every prune sweeps those (older than the
cutoff) too.

The `events` table. An event row is the idempotency record of one applied message; deleting
it could let a duplicate of that message apply again. The rows deleted here cannot have a
duplicate left anywhere:
- the keys derived from a pruned run (`queued:`, `launch:`, `finished:`, `task:`,
  `run-finished:`, `backfill-cancel:` + run id). The run is finished, no attempt of it is open
  (recovery re-sends only for open attempts), and no outbox row mentions it (the outbox is the
  only way a message is delivered again); a late message about a deleted run would find no row
  and change nothing anyway;
- operator-request and start-up keys (`req:`, `started:`, `backfills-started:` and the keys
  derived from them) older than the cutoff: they are random per request, never re-sent; a
  duplicate delivery of one is immediate, not weeks later.
Every other event row is kept. `outbox` rows are never deleted here: they are work not yet
done. Partition status rows are kept: they are the history of the data, not of runs (their
run ids may then name pruned runs).

Run keys. A key maps to at most one run, ever (SPEC §5): pruning a keyed run leaves a
tombstone (key, run id, fingerprint, final state), so repeating the request after the prune
returns the pruned run (`created: false`, `pruned: true`) instead of running it again, and a
different request under the key is still a `run_key_conflict`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import msgspec
import structlog

from arcod.core.paths import safe_component
from arcod.core.retention import (
    FINISHED_RUN_STATES,
    BackfillInfo,
    RunInfo,
    decide_prune,
    run_event_keys,
)
from arcod.store.database import Database

log = structlog.get_logger("arcod.retention")

BATCH_ROOTS = 100  # lineage groups considered per transaction
_IN_CHUNK = 500  # ids per `IN (...)` list
RANDOM_KEY_PREFIXES = ("req:", "started:", "backfills-started:")
_EXTRA_EXACT_KEYS = ("backfill-cancel:{run}",)

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Any]]]


class PruneReport(msgspec.Struct, kw_only=True):
    cutoff: str
    dry_run: bool
    runs: int = 0
    tasks: int = 0
    attempts: int = 0
    backfills: int = 0
    events: int = 0
    log_dirs: int = 0
    log_bytes: int = 0
    kept_busy: int = 0
    kept_lineage: int = 0
    kept_backfill: int = 0
    run_ids: list[str] = []  # the first 100 pruned, for the operator to see


def cutoff_for(older_than_s: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(timezone.utc)) - timedelta(seconds=older_than_s)


def _iso(ts: datetime) -> str:
    """As arcod.store.runs.now_iso spells timestamps (runs, backfills)."""
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _event_iso(ts: datetime) -> str:
    """As the `events.created_at` default spells them."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


async def _fetch_in(fetch: Fetch, sql: str, ids: Sequence[Any], extra: Sequence[Any] = ()) -> list[Any]:
    """Run `sql` (with one `{marks}` placeholder for an IN list) over `ids` in pieces."""
    rows: list[Any] = []
    for piece in _chunks(list(ids)):
        rows.extend(await fetch(sql.format(marks=_marks(piece)), (*piece, *extra)))
    return rows


async def _has_table(fetch: Fetch, name: str) -> bool:
    return bool(await fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


async def _busy_runs(fetch: Fetch) -> frozenset[str]:
    """Runs someone may still act on: an attempt is open, or the outbox holds a message about it."""
    busy = {r["run_id"] for r in await fetch(
        "SELECT DISTINCT run_id FROM attempts WHERE state IN ('SCHEDULED', 'RUNNING')", ())}
    after = 0
    while True:
        rows = await fetch("SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT 1000", (after,))
        for row in rows:
            after = row["id"]
            try:
                body = msgspec.json.decode(row["body"])
            except msgspec.DecodeError:
                continue
            if isinstance(body, dict) and isinstance(body.get("run_id"), str):
                busy.add(body["run_id"])
        if len(rows) < 1000:
            return frozenset(busy)


async def _universe(fetch: Fetch, roots: list[str], backfills_exist: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every run of the lineage groups of `roots`, closed over backfill families and their chunk runs."""
    runs: dict[str, Any] = {}
    backfills: dict[str, Any] = {}
    pending_roots = set(roots)
    seen_roots: set[str] = set()
    while pending_roots:
        batch = sorted(pending_roots - seen_roots)
        seen_roots |= pending_roots
        pending_roots = set()
        for row in await _fetch_in(fetch, "SELECT seq, run_id, parent_run_id, root_run_id, state, finished_at,"
                                   " backfill_id FROM runs WHERE root_run_id IN ({marks})", batch):
            runs[row["run_id"]] = row
        if not backfills_exist:
            break
        wanted = sorted({r["backfill_id"] for r in runs.values() if r["backfill_id"]} - set(backfills))
        if not wanted:
            break
        families = {r["root_backfill_id"] for r in await _fetch_in(
            fetch, "SELECT root_backfill_id FROM backfills WHERE backfill_id IN ({marks})", wanted)}
        for row in await _fetch_in(fetch, "SELECT seq, backfill_id, root_backfill_id, state, finished_at"
                                   " FROM backfills WHERE root_backfill_id IN ({marks})", sorted(families)):
            backfills[row["backfill_id"]] = row
        for row in await _fetch_in(fetch, "SELECT root_run_id FROM runs WHERE backfill_id IN ({marks})",
                                   sorted(backfills)):
            if row["root_run_id"] not in seen_roots:
                pending_roots.add(row["root_run_id"])
    return runs, backfills


async def prune(
    db: Database,
    *,
    logs_dir: Path,
    older_than_s: float,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_roots: int = BATCH_ROOTS,
) -> PruneReport:
    """Remove (or, with `dry_run`, count) what retention allows; see the module docstring."""
    cutoff = cutoff_for(older_than_s, now)
    run_cutoff = _iso(cutoff)
    report = PruneReport(cutoff=run_cutoff, dry_run=dry_run)
    backfills_exist = await _has_table(db.read_all, "backfills")
    done_roots: set[str] = set()  # groups decided through a backfill family ahead of the cursor
    cursor = ""
    while True:
        if dry_run:
            more, cursor, pruned_runs = await _batch(db.read_all, None, report, cursor, batch_roots, run_cutoff,
                                                     backfills_exist, done_roots)
        else:
            async with db.transaction() as tx:
                more, cursor, pruned_runs = await _batch(tx.fetch_all, tx, report, cursor, batch_roots, run_cutoff,
                                                         backfills_exist, done_roots)
        await _remove_log_dirs(logs_dir, pruned_runs, report, measure_only=dry_run)
        if not more:
            break
    await _sweep_orphan_log_dirs(db, logs_dir, cutoff, report, dry_run)
    await _sweep_random_events(db, _event_iso(cutoff), report, dry_run)
    log.info("prune finished", **msgspec.to_builtins(report) | {"run_ids": len(report.run_ids)})
    return report


async def _batch(fetch: Fetch, tx: Any, report: PruneReport, cursor: str, batch_roots: int, run_cutoff: str,
                 backfills_exist: bool, done_roots: set[str]) -> tuple[bool, str, list[str]]:
    """Decide (and unless `tx` is None, delete) one batch of lineage groups. Returns
    (more batches may follow, the new cursor, the run ids deleted or, dry, to be deleted)."""
    states = tuple(FINISHED_RUN_STATES)
    rows = await fetch(
        f"SELECT DISTINCT root_run_id FROM runs WHERE root_run_id > ? AND state IN ({_marks(states)})"
        " AND finished_at < ? ORDER BY root_run_id LIMIT ?", (cursor, *states, run_cutoff, batch_roots))
    roots = [r["root_run_id"] for r in rows]
    if not roots:
        return False, cursor, []
    new_cursor = roots[-1]
    roots = [r for r in roots if r not in done_roots]
    if not roots:
        return True, new_cursor, []
    run_rows, backfill_rows = await _universe(fetch, roots, backfills_exist)
    # Groups the cursor has not passed and no earlier batch decided are this batch's to count;
    # those ahead of the cursor are then skipped when the cursor reaches them.
    fresh = {r["root_run_id"] for r in run_rows.values()
             if r["root_run_id"] in roots or (r["root_run_id"] > new_cursor and r["root_run_id"] not in done_roots)}
    done_roots.update(root for root in fresh if root > new_cursor)
    count_in = frozenset(rid for rid, r in run_rows.items() if r["root_run_id"] in fresh)
    decision = decide_prune(
        [RunInfo(run_id=r["run_id"], parent_run_id=r["parent_run_id"], state=r["state"],
                 finished_at=r["finished_at"], backfill_id=r["backfill_id"]) for r in run_rows.values()],
        [BackfillInfo(backfill_id=b["backfill_id"], root_backfill_id=b["root_backfill_id"], state=b["state"],
                      finished_at=b["finished_at"]) for b in backfill_rows.values()],
        run_cutoff=run_cutoff,
        busy=await _busy_runs(fetch),
        count_in=count_in,
    )
    report.kept_busy += decision.kept_busy
    report.kept_lineage += decision.kept_lineage
    report.kept_backfill += decision.kept_backfill
    # Children before parents: a run's seq is larger than its parent's (and a backfill's than
    # its parent's), so deleting in descending seq never breaks a foreign key between pieces.
    run_ids = sorted(decision.runs, key=lambda rid: run_rows[rid]["seq"], reverse=True)
    backfill_ids = sorted(decision.backfills, key=lambda bid: backfill_rows[bid]["seq"], reverse=True)
    if not run_ids and not backfill_ids:
        return True, new_cursor, []
    count = "SELECT COUNT(*) AS n FROM {table} WHERE run_id IN ({marks})"
    report.tasks += sum(r["n"] for r in await _fetch_in(fetch, count.replace("{table}", "tasks"), run_ids))
    report.attempts += sum(r["n"] for r in await _fetch_in(fetch, count.replace("{table}", "attempts"), run_ids))
    report.runs += len(run_ids)
    report.backfills += len(backfill_ids)
    report.run_ids.extend(run_ids[: max(0, 100 - len(report.run_ids))])
    if tx is None:
        report.events += await _count_run_events(fetch, run_ids)
        return True, new_cursor, run_ids
    for piece in _chunks(run_ids):
        await tx.execute(f"DELETE FROM attempts WHERE run_id IN ({_marks(piece)})", piece)
        await tx.execute(f"DELETE FROM tasks WHERE run_id IN ({_marks(piece)})", piece)
    if backfill_ids:
        for table in ("backfill_chunks", "backfill_targets", "backfill_transitions"):
            if await _has_table(fetch, table):
                for piece in _chunks(backfill_ids):
                    await tx.execute(f"DELETE FROM {table} WHERE backfill_id IN ({_marks(piece)})", piece)
    for piece in _chunks(run_ids):
        await tx.execute(
            "INSERT INTO run_key_tombstones (run_key, run_id, fingerprint, state, pruned_at)"
            f" SELECT run_key, run_id, fingerprint, state, ? FROM runs WHERE run_key IS NOT NULL AND run_id IN ({_marks(piece)})"
            " ON CONFLICT (run_key) DO NOTHING",
            [_iso(datetime.now(timezone.utc)), *piece])
        await tx.execute(f"DELETE FROM runs WHERE run_id IN ({_marks(piece)})", piece)
    for piece in _chunks(backfill_ids):
        await tx.execute(f"DELETE FROM backfills WHERE backfill_id IN ({_marks(piece)})", piece)
    report.events += await _delete_run_events(tx, run_ids)
    return True, new_cursor, run_ids


async def _actors(fetch: Fetch) -> list[str]:
    """The distinct actors of `events`, walked through its (actor, idem_key) index."""
    return [r["actor"] for r in await fetch(
        "WITH RECURSIVE a(actor) AS (SELECT MIN(actor) FROM events"
        " UNION ALL SELECT (SELECT MIN(actor) FROM events WHERE actor > a.actor) FROM a WHERE a.actor IS NOT NULL)"
        " SELECT actor FROM a WHERE actor IS NOT NULL", ())]


async def _count_run_events(fetch: Fetch, run_ids: Sequence[str]) -> int:
    """What `_delete_run_events` would delete (for a dry run)."""
    n = 0
    for actor in await _actors(fetch):
        for run_id in run_ids:
            exact, prefixes = run_event_keys(run_id)
            exact = (*exact, *(k.format(run=run_id) for k in _EXTRA_EXACT_KEYS))
            for key in exact:
                n += (await fetch("SELECT COUNT(*) AS n FROM events WHERE actor = ? AND idem_key = ?", (actor, key)))[0]["n"]
            for prefix in prefixes:
                n += (await fetch("SELECT COUNT(*) AS n FROM events WHERE actor = ? AND idem_key >= ? AND idem_key < ?",
                                  (actor, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))))[0]["n"]
    return n


async def _delete_run_events(tx: Any, run_ids: Sequence[str]) -> int:
    """The event rows keyed by a pruned run id (see the module docstring for why this is safe)."""
    actors = await _actors(tx.fetch_all)
    exact_keys, ranges = [], []
    for run_id in run_ids:
        exact, prefixes = run_event_keys(run_id)
        for actor in actors:
            exact_keys.extend((actor, key) for key in (*exact, *(k.format(run=run_id) for k in _EXTRA_EXACT_KEYS)))
            # [prefix, prefix with its last character incremented): every key starting with it.
            ranges.extend((actor, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)) for prefix in prefixes)
    before = (await tx.fetch_one("SELECT total_changes() AS n"))["n"]
    await tx.executemany("DELETE FROM events WHERE actor = ? AND idem_key = ?", exact_keys)
    await tx.executemany("DELETE FROM events WHERE actor = ? AND idem_key >= ? AND idem_key < ?", ranges)
    return (await tx.fetch_one("SELECT total_changes() AS n"))["n"] - before


async def _sweep_random_events(db: Database, event_cutoff: str, report: PruneReport, dry_run: bool) -> None:
    """Events of operator requests and daemon starts older than the cutoff, in batches."""
    like = " OR ".join("idem_key LIKE ?" for _ in RANDOM_KEY_PREFIXES)
    params = tuple(p + "%" for p in RANDOM_KEY_PREFIXES)
    after = 0
    while True:
        rows = await db.read_all(
            f"SELECT seq, created_at FROM events WHERE seq > ? AND ({like}) ORDER BY seq LIMIT 1000", (after, *params))
        old = [r["seq"] for r in rows if r["created_at"] < event_cutoff]
        if old:
            report.events += len(old)
            if not dry_run:
                async with db.transaction() as tx:
                    await tx.execute(f"DELETE FROM events WHERE seq IN ({_marks(old)})", old)
        if len(rows) < 1000 or len(old) < len(rows):
            return  # events are in creation order: past the first young one, all are young
        after = rows[-1]["seq"]


def _inside(logs_dir: Path, run_id: str) -> Path | None:
    target = logs_dir / safe_component(run_id)
    return target if target.parent == logs_dir else None


def _remove_tree(target: Path, measure_only: bool) -> tuple[int, int]:
    """Remove one run's log directory; (directories removed, bytes freed). Never follows links."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return 0, 0
    if not os.path.isdir(target) or os.path.islink(target):
        if not measure_only:
            os.unlink(target)
        return 1, st.st_size
    size = 0
    for root, _dirs, files in os.walk(target):
        for name in files:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    if not measure_only:
        shutil.rmtree(target, ignore_errors=True)
    return 1, size


async def _remove_log_dirs(logs_dir: Path, run_ids: Sequence[str], report: PruneReport,
                           measure_only: bool = False) -> None:
    def work() -> tuple[int, int]:
        dirs = size = 0
        for run_id in run_ids:
            target = _inside(logs_dir, run_id)
            if target is not None:
                d, s = _remove_tree(target, measure_only)
                dirs, size = dirs + d, size + s
        return dirs, size

    if run_ids:
        dirs, size = await anyio.to_thread.run_sync(work)
        report.log_dirs += dirs
        report.log_bytes += size


async def _sweep_orphan_log_dirs(db: Database, logs_dir: Path, cutoff: datetime, report: PruneReport,
                                 dry_run: bool) -> None:
    """Log directories whose run no longer exists (a crash after a batch's commit), or that
    the dry run would delete along with their runs, older than the cutoff."""
    def listing() -> list[tuple[str, float]]:
        try:
            with os.scandir(logs_dir) as entries:
                return [(e.name, e.stat(follow_symlinks=False).st_mtime) for e in entries]
        except FileNotFoundError:
            return []

    entries = [(name, mtime) for name, mtime in await anyio.to_thread.run_sync(listing)
               if mtime < cutoff.timestamp()]
    if not entries:
        return
    by_run = {unquote(name): name for name, _ in entries}
    present = {r["run_id"] for r in await _fetch_in(
        db.read_all, "SELECT run_id FROM runs WHERE run_id IN ({marks})", sorted(by_run))}
    # In a dry run the runs to prune are still present, so only true orphans are counted.
    orphans = [run_id for run_id in by_run if run_id not in present]
    await _remove_log_dirs(logs_dir, orphans, report, measure_only=dry_run)


async def prune_daily(db: Database, *, logs_dir: Path, retention_days: int, first_after_s: float = 5.0,
                      every_s: float = 86400.0) -> None:
    """The daemon's retention task: a prune `first_after_s` after start (once recovery and the
    first dispatch have settled), then once a day.

    A failed pass (database busy, disk full) is logged and retried at the next one; it never
    takes the daemon down.
    """
    if retention_days <= 0:
        return
    await anyio.sleep(first_after_s)
    while True:
        try:
            await prune(db, logs_dir=logs_dir, older_than_s=retention_days * 86400.0)
        except Exception:
            log.exception("scheduled prune failed; retrying at the next one")
        await anyio.sleep(every_s)
