"""A backfill request, validated whole before anything is stored (SPEC §4, §6).

`prepare_backfill` is the one gate for `backfill create` (and its dry-run): it resolves the
selection, checks that every selected asset is partitioned by one shared definition, parses
the partition selection, pins it "as of" creation time, counts it by arithmetic, checks the
options, and fingerprints the request for `--request-id` idempotency. It raises the first
problem as an ArcodError that says what to change; on success the caller has everything it
stores -- and never a partition list.

The fingerprint covers the request as the operator gave it (selection text, closure,
canonical partition selection *before* pinning, options with defaults filled in), not what
it resolved to at that moment: repeating a request an hour later under the same request id
is the same request even though "all" of an hourly definition now pins one window further.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from arcod.core import errors
from arcod.core.backfill_chunks import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    MAX_CHUNK_SIZE,
    MAX_MAX_CONCURRENCY,
    MIN_CHUNK_SIZE,
    MIN_MAX_CONCURRENCY,
    ChunkLayout,
    Reprocess,
)
from arcod.core.canonical import fingerprint
from arcod.core.definitions import Definitions
from arcod.core.errors import ArcodError
from arcod.core.partitions import (
    PartitionSelector,
    format_selector,
    parse_selector,
    pin_as_of,
    selector_count,
    selector_to_dict,
)
from arcod.core.selection import SelectionRequest, resolve_request

# A chunk is one run, and a run holds at most this many tasks (the planner's MAX_RUN_TASKS).
MAX_CHUNK_TASKS = 10_000
MAX_REQUEST_ID_LENGTH = 256

# Not in errors.py yet: the same request id with a different request.
REQUEST_ID_CONFLICT = "request_id_conflict"


class BackfillSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a backfill stores about what it covers, and the request's fingerprint."""

    assets: tuple[str, ...]
    definition: str
    selector: PartitionSelector  # pinned, canonical
    requested_selector: PartitionSelector  # canonical, as asked (before pinning)
    partitions_total: int
    chunk_size: int
    max_concurrency: int
    newest_first: bool
    reprocess: Reprocess
    fingerprint: str

    @property
    def layout(self) -> ChunkLayout:
        return ChunkLayout(chunk_size=self.chunk_size, span_lo=0, span_hi=self.partitions_total,
                           newest_first=self.newest_first)


def partitioned_by_definition(defs: Definitions, keys: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(definition name -> its selected assets, unpartitioned selected assets), both sorted."""
    by_def: dict[str, list[str]] = {}
    plain: list[str] = []
    for key in sorted(keys):
        name = defs.assets[key].partitions
        if name is None:
            plain.append(key)
        else:
            by_def.setdefault(name, []).append(key)
    return dict(sorted(by_def.items())), plain


def mixed_partitions_error(by_def: Mapping[str, Sequence[str]], what: str = "run") -> ArcodError:
    """SPEC §4: partitioned assets of one run or backfill must share a definition."""
    return ArcodError(
        errors.MIXED_PARTITIONS,
        "the selected partitioned assets use different partitions definitions: "
        + "; ".join(f"{name}: {', '.join(keys)}" for name, keys in sorted(by_def.items()))
        + f". Select assets of one definition per {what}.",
        {"definitions": {name: list(keys) for name, keys in sorted(by_def.items())}},
    )


def check_request_id(request_id: str | None) -> None:
    if request_id is None:
        return
    if (not request_id or len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable()
            or request_id != request_id.strip()):
        raise ArcodError(
            errors.BAD_REQUEST,
            f"a request id is 1 to {MAX_REQUEST_ID_LENGTH} printable characters without surrounding space",
            {"request_id": request_id[:300] if request_id else request_id},
        )


def _in_range(name: str, flag: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ArcodError(
            errors.BAD_REQUEST,
            f"{flag} must be a whole number from {low} to {high:,}, not {value!r}",
            {"field": name, "value": value, "min": low, "max": high},
        )
    return value


def prepare_backfill(
    defs: Definitions,
    *,
    select: Sequence[str],
    upstream: int | None,
    downstream: int | None,
    partitions: str,
    chunk_size: int | None,
    max_concurrency: int | None,
    newest_first: bool,
    reprocess: str,
    as_of: datetime,
) -> BackfillSpec:
    """Validate a create request against the current definitions; see the module docstring."""
    if not select:
        raise ArcodError(errors.BAD_REQUEST, "give at least one selection, e.g. --select 'group:ingest'")
    resolution = resolve_request(
        SelectionRequest(select=tuple(select), upstream=upstream, downstream=downstream), defs.graph, defs.assets)
    by_def, plain = partitioned_by_definition(defs, resolution.keys)
    if plain:
        raise ArcodError(
            errors.PARTITION_ERROR,
            f"a backfill runs partitioned assets only, and {', '.join(plain)} "
            f"{'is' if len(plain) == 1 else 'are'} not partitioned; leave "
            f"{'it' if len(plain) == 1 else 'them'} out of the selection (run "
            f"{'it' if len(plain) == 1 else 'them'} with `arcod run`)",
            {"unpartitioned": plain},
        )
    if len(by_def) > 1:
        raise mixed_partitions_error(by_def, "backfill")
    (name, assets), = by_def.items()
    try:
        mode = Reprocess(reprocess)
    except ValueError:
        raise ArcodError(
            errors.BAD_REQUEST,
            f"--reprocess takes all, missing or failed, not {reprocess!r}",
            {"field": "reprocess", "value": reprocess},
        ) from None
    size = _in_range("chunk_size", "--chunk-size", DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                     MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
    concurrency = _in_range("max_concurrency", "--max-concurrency",
                            DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency,
                            MIN_MAX_CONCURRENCY, MAX_MAX_CONCURRENCY)
    if size * len(assets) > MAX_CHUNK_TASKS:
        raise ArcodError(
            errors.BAD_REQUEST,
            f"a chunk of {size:,} partitions x {len(assets)} assets would be a run of "
            f"{size * len(assets):,} tasks, more than {MAX_CHUNK_TASKS:,}; use --chunk-size "
            f"{MAX_CHUNK_TASKS // len(assets)} or less",
            {"chunk_size": size, "assets": len(assets), "max_tasks": MAX_CHUNK_TASKS},
        )
    defn = defs.partitions[name]
    requested = parse_selector(partitions, defn, as_of)
    pinned = pin_as_of(requested, defn, as_of)
    total = selector_count(pinned, defn, as_of)
    if total == 0:
        raise ArcodError(errors.EMPTY_SELECTION, f"the partition selection {partitions!r} selects nothing",
                         {"partitions": partitions, "definition": name})
    fp = fingerprint({
        "select": list(select), "upstream": upstream, "downstream": downstream,
        "definition": name, "partitions": selector_to_dict(requested),
        "chunk_size": size, "max_concurrency": concurrency, "newest_first": bool(newest_first),
        "reprocess": str(mode),
    })
    return BackfillSpec(
        assets=tuple(assets), definition=name, selector=pinned, requested_selector=requested,
        partitions_total=total, chunk_size=size, max_concurrency=concurrency,
        newest_first=bool(newest_first), reprocess=mode, fingerprint=fp,
    )


def describe_target(selector: PartitionSelector, layout: ChunkLayout, full_count: int) -> str:
    """One line for humans: the selection, and what a retry child narrowed it to."""
    text = format_selector(selector)
    parts = []
    if layout.explicit_count:
        parts.append(f"{layout.explicit_count:,} listed partitions")
    if layout.span_count and (layout.span_lo, layout.span_hi) != (0, full_count):
        parts.append(f"positions {layout.span_lo:,}..{layout.span_hi - 1:,} of {text}")
    elif layout.span_count:
        parts.append(text)
    return " + ".join(parts) or "nothing"
