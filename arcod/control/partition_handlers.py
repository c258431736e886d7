"""Partition requests: partition status of an asset, and dynamic partition keys.

`partitions.list` reads the history indexer's rows of one asset and lets the core place them
in the asset's definition (`arcod.core.partition_status`): the cost is the number of
partitions that ever ran plus the page, whatever the size of the definition.

`partitions.edit` adds or removes dynamic keys in one write transaction and rebinds the
daemon's definitions (`Daemon.refresh_dynamic_keys`) inside it, so a run naming a new key
works as soon as the command returns (no run can be planned against the old keys after the
commit), and keys survive restarts (they are in SQLite).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio

from arcod.control import protocol as p
from arcod.core import errors
from arcod.core import partition_status as ps
from arcod.core.errors import ArcodError
from arcod.store import partitions_store

if TYPE_CHECKING:
    from arcod.daemon import Daemon

MAX_LIST_LIMIT = 10_000
# A key names a log directory (percent-encoded, inside a 255-byte file name with its asset).
MAX_KEY_ENCODED = 200
MEMO_KEYS = 2_000_000  # positions memoised per definition (~100 bytes each)


def _grows_with_time(defn: Any) -> bool:
    """True when the definition's size depends on the clock (open-ended time windows, also
    as a multi dimension): its status is then reported as of now, and says so."""
    try:
        defn.size(None)
    except ValueError:
        return True
    return False


def _listing(asset: str, name: str, defn: Any, rows: list[ps.StatusRow], memo: dict[str, int],
             state: str | None, offset: int, limit: int) -> dict:
    """The `partitions list` answer for a partitioned asset, from its status rows (pure)."""
    as_of = datetime.now(timezone.utc) if _grows_with_time(defn) else None
    status = ps.locate(rows, defn, as_of, memo)
    entries = ps.page(status, state, offset, limit)
    keys = ps.page_keys(defn, [e.position for e in entries], as_of)
    matching = status.total if state is None else status.counts[state]
    end = offset + len(entries)
    return {
        "asset": asset,
        "definition": name,
        "kind": defn.kind,
        "as_of": None if as_of is None else as_of.isoformat(timespec="seconds"),
        "partitions_total": status.total,
        "counts": status.counts,
        "not_in_definition": status.outside,
        "health": ps.health(status),
        "state": state,
        "offset": offset,
        "limit": limit,
        "matching": matching,
        "next_offset": end if end < matching else None,
        "partitions": [ps.entry_dict(k, e) for k, e in zip(keys, entries)],
    }


class PartitionHandlers:
    daemon: Daemon

    TABLE = {
        p.PartitionsList: "partitions_list",
        p.PartitionsEdit: "partitions_edit",
    }

    # ── partitions list ─────────────────────────────────────────────────────

    async def partitions_list(self, req: p.PartitionsList) -> dict:
        defs = self.daemon.definitions
        assert defs is not None
        asset = defs.asset(req.asset)
        state = None if req.state is None else req.state.upper()
        if state is not None and state not in ps.STATES:
            raise ArcodError(errors.BAD_REQUEST, f"unknown partition state {req.state!r}; expected one of "
                             f"{', '.join(ps.STATES)}", {"state": req.state})
        if not 1 <= req.limit <= MAX_LIST_LIMIT:
            raise ArcodError(errors.BAD_REQUEST, f"--limit must be between 1 and {MAX_LIST_LIMIT}")
        if req.offset < 0:
            raise ArcodError(errors.BAD_REQUEST, "--offset must be 0 or more")
        rows = await partitions_store.status_rows(self.daemon.db, asset.key)
        if asset.partitions is None:
            return self._unpartitioned(asset.key, rows, state, req.offset)
        defn = defs.partitions[asset.partitions]
        memo = self._position_memo(asset.partitions, defn)
        # Placing 100,000 rows costs a second when the memo is cold: off the event loop, so
        # every other client keeps being answered meanwhile.
        return await anyio.to_thread.run_sync(
            _listing, asset.key, asset.partitions, defn, rows, memo, state, req.offset, req.limit,
            limiter=self.daemon.cpu_limiter())

    def _position_memo(self, name: str, defn: Any) -> dict[str, int]:
        """The key -> position memo of this very definition value (a reload or a dynamic key
        change installs a new value, hence a new memo). Bounded: cleared past MEMO_KEYS."""
        memos: dict[str, tuple[Any, dict[str, int]]] = self.__dict__.setdefault("_position_memos", {})
        held = memos.get(name)
        if held is None or held[0] is not defn or len(held[1]) > MEMO_KEYS:
            held = memos[name] = (defn, {})
        return held[1]

    def _unpartitioned(self, asset: str, rows: list[ps.StatusRow], state: str | None, offset: int) -> dict:
        """An unpartitioned asset has one status (its row has partition ''): shown as one
        partition whose key is null, so scripts need no second shape."""
        row = next((r for r in rows if r.partition == ""), None)
        status = ps.unpartitioned_status(row)
        entry = ps.PageEntry(0, row, ps.partition_state(row))
        shown = offset == 0 and (state is None or state == entry.state)
        return {
            "asset": asset, "definition": None, "kind": None, "as_of": None, "partitions_total": 1,
            "counts": status.counts, "not_in_definition": 0, "health": [entry.state], "state": state,
            "offset": offset, "limit": 1, "matching": 1 if state in (None, entry.state) else 0, "next_offset": None,
            "partitions": [ps.entry_dict(None, entry)] if shown else [],
        }

    # ── partitions add|remove ───────────────────────────────────────────────

    async def partitions_edit(self, req: p.PartitionsEdit) -> dict:
        from arcod.core.partitions import with_dynamic_keys

        defs = self.daemon.definitions
        assert defs is not None
        defn = defs.partitions.get(req.definition)
        dynamic = sorted(n for n, d in defs.partitions.items() if d.kind == "dynamic")
        if defn is None:
            raise ArcodError(
                errors.NOT_FOUND,
                f"no partitions definition {req.definition!r}; dynamic definitions: {', '.join(dynamic) or 'none'}",
                {"what": "partitions definition", "id": req.definition, "dynamic": dynamic})
        if defn.kind != "dynamic":
            raise ArcodError(
                errors.PARTITION_ERROR,
                f"partitions {req.definition!r} is {defn.kind}, not dynamic: only dynamic definitions take keys "
                f"with `arcod partitions {req.action}`; dynamic definitions: {', '.join(dynamic) or 'none'}",
                {"partitions": req.definition, "kind": defn.kind, "dynamic": dynamic})
        if not req.keys:
            raise ArcodError(errors.BAD_REQUEST, f"give at least one key: arcod partitions {req.action} DEF KEY...")
        keys = list(dict.fromkeys(req.keys))
        with_dynamic_keys(defn, keys)  # every key valid (SPEC §3), all problems in one refusal
        too_long = [k for k in keys if len(quote(k, safe="")) > MAX_KEY_ENCODED]
        if too_long:
            raise ArcodError(
                errors.PARTITION_ERROR,
                f"partition key {too_long[0][:40]!r}... is too long: at most {MAX_KEY_ENCODED} characters, a "
                "non-ASCII character counting as its percent-encoded UTF-8 bytes (it names log directories)",
                {"partitions": req.definition, "keys": [k[:300] for k in too_long]})
        rebound = False
        try:
            async with self.daemon.db.transaction() as tx:
                if req.action == "add":
                    changed, unchanged = await partitions_store.add_keys(tx, req.definition, keys)
                else:
                    await self._refuse_live(tx, defs, req.definition, keys)
                    changed, unchanged = await partitions_store.remove_keys(tx, req.definition, keys)
                total = len(await partitions_store.stored_keys(tx, req.definition))
                if changed:
                    # Before the commit, while we hold the writer: no run can be planned
                    # against the old keys once the change is visible.
                    await self.daemon.refresh_dynamic_keys(tx)
                    rebound = True
        except BaseException:
            if rebound:  # the commit failed: back to the committed keys
                with anyio.CancelScope(shield=True):
                    await self.daemon.refresh_dynamic_keys()
            raise
        verb = "added" if req.action == "add" else "removed"
        return {
            "definition": req.definition,
            "action": req.action,
            verb: changed,
            "unchanged": unchanged,  # add: already present; remove: not a key
            "changed": bool(changed),
            "keys_total": total,
        }

    async def _refuse_live(self, tx: Any, defs: Any, definition: str, keys: list[str]) -> None:
        """Refuse to remove a key that a PENDING or RUNNING task of an unfinished run uses:
        the task would run for a partition that no longer exists. Cancel the run or wait."""
        # Which part of a partition key is the dynamic key: the whole key, or one side of a
        # multi key `v1|v2` whose dimension is this definition.
        sides: dict[str, int | None] = {}
        for name, d in defs.partitions.items():
            if name == definition:
                sides[name] = None
            elif d.kind == "multi":
                for i, (_, dim) in enumerate(d.dims):
                    if dim.name == definition:
                        sides[name] = i
        assets = sorted(k for k, a in defs.assets.items() if a.partitions in sides)
        wanted = set(keys)
        busy: dict[str, list[str]] = {}
        for task in await partitions_store.live_tasks(tx, assets):
            side = sides[defs.assets[task["asset"]].partitions]
            partition = task["partition"] or ""
            value = partition if side is None else partition.split("|")[side]
            if value in wanted:
                busy.setdefault(value, []).append(task["run_id"])
        if busy:
            runs = sorted({r for rs in busy.values() for r in rs})
            raise ArcodError(
                errors.PARTITION_ERROR,
                f"cannot remove {', '.join(repr(k) for k in sorted(busy))} from {definition!r}: pending or running "
                f"tasks of run{'s' if len(runs) > 1 else ''} {', '.join(runs)} use "
                f"{'it' if len(busy) == 1 else 'them'}; cancel the run (`arcod cancel RUN`) or let it finish, "
                "then remove",
                {"partitions": definition, "keys": sorted(busy), "runs": runs})
