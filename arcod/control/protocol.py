"""The control socket's wire format: newline-delimited JSON frames of msgspec structs.

A client writes one request per line, `{"cmd": "...", ...fields}`, and reads one line back:
`{"result": {...}}` on success or `{"error": {"code", "message", "details"}}` on refusal.
Requests are a tagged union on `cmd`, so decoding a frame also validates every field's type
and names the bad one; there is no hand-written validation of wire input.

This module is imported by the CLI on every command, so it stays small and imports nothing
heavier than msgspec.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from arcod.core.tags import MAX_TAGS, TAG_KEY_PATTERN, TAG_VALUE_PATTERN

MAX_FRAME_BYTES = 1 << 20  # 1 MiB, newline included

# Bounds on the shape of a request. The frame limit bounds its size; these say what each field
# may hold, so a request can never make the daemon do unbounded work, and a refusal names the
# field and what was expected (msgspec: "Expected `str` of length <= 256 - at `$.run_key`").
# Closure depth on the wire: None = no closure, -1 = unlimited, N >= 0 = depth N.
Depth = Annotated[int, msgspec.Meta(ge=-1, le=1_000_000)] | None
# Run ids, backfill ids, asset keys, partition keys: things named by one short string.
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
RunKey = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
SelectExpr = Annotated[str, msgspec.Meta(min_length=1, max_length=65_536)]
Selects = Annotated[list[SelectExpr], msgspec.Meta(max_length=1024)]
# Tags: the syntax of arcod.core.tags (a tiny module: importing it costs the CLI nothing).
TagKey = Annotated[str, msgspec.Meta(pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, msgspec.Meta(pattern=TAG_VALUE_PATTERN)]
Tags = Annotated[dict[TagKey, TagValue], msgspec.Meta(max_length=MAX_TAGS)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
# Any offset past the end is an empty page, but SQLite integers stop at 2**63 - 1.
Offset = Annotated[int, msgspec.Meta(ge=0, le=10**18)]


class Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="cmd", forbid_unknown_fields=True):
    pass


class Status(Request, tag="status"):
    pass


class Reload(Request, tag="reload"):
    pass


class AssetsList(Request, tag="assets.list"):
    select: SelectExpr | None = None


class AssetsShow(Request, tag="assets.show"):
    key: Ident


class Select(Request, tag="select"):
    select: Selects
    upstream: Depth = None
    downstream: Depth = None


class Run(Request, tag="run"):
    select: Selects
    upstream: Depth = None
    downstream: Depth = None
    partition: Ident | None = None
    partitions: str | None = None  # a selector: `A..B`, `a,b,c`, `all`; bounded by the frame
    run_key: RunKey | None = None
    tags: Tags = {}


class RunsList(Request, tag="runs.list"):
    state: Literal["QUEUED", "RUNNING", "CANCELING", "SUCCEEDED", "FAILED", "CANCELED"] | None = None
    backfill_id: Ident | None = None
    root_run_id: Ident | None = None
    limit: Limit = 50


class RunsShow(Request, tag="runs.show"):
    run_id: Ident


class RunsTree(Request, tag="runs.tree"):
    run_id: Ident


class Cancel(Request, tag="cancel"):
    run_id: Ident


class Rerun(Request, tag="rerun"):
    run_id: Ident
    kind: Literal["from_failure", "subset", "all"]
    select: Selects = []
    upstream: Depth = None
    downstream: Depth = None
    run_key: RunKey | None = None


class Logs(Request, tag="logs"):
    run_id: Ident
    asset: Ident | None = None
    partition: Ident | None = None
    # attempt id -> bytes already read, for --follow
    offsets: Annotated[dict[Ident, Offset], msgspec.Meta(max_length=100_000)] = {}


class PartitionsList(Request, tag="partitions.list"):
    asset: str
    state: str | None = None
    limit: int = 100
    offset: Offset = 0


class PartitionsEdit(Request, tag="partitions.edit"):
    definition: str
    action: Literal["add", "remove"]
    keys: list[str]


# Backfills. Ranges of chunk_size / max_concurrency are checked by the core with errors that
# name the flag; here only the shape.
BackfillState = Literal["RUNNING", "PAUSED", "CANCELING", "CANCELED", "SUCCEEDED", "FAILED"]
ChunkState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]

class BackfillCreate(Request, tag="backfill.create"):
    select: Selects
    partitions: str  # a selector: `A..B`, `a,b,c`, `all`; bounded by the frame
    upstream: Depth = None
    downstream: Depth = None
    chunk_size: int | None = None
    max_concurrency: int | None = None
    newest_first: bool = False
    reprocess: Literal["all", "missing", "failed"] = "all"
    request_id: RequestId | None = None
    dry_run: bool = False


class BackfillList(Request, tag="backfill.list"):
    state: BackfillState | None = None
    limit: Limit = 50


class BackfillShow(Request, tag="backfill.show"):
    backfill_id: Ident


class BackfillChunks(Request, tag="backfill.chunks"):
    backfill_id: Ident
    state: ChunkState | None = None
    offset: Offset = 0
    limit: Limit = 100


class BackfillPartitions(Request, tag="backfill.partitions"):
    backfill_id: Ident
    state: ChunkState | None = None
    offset: Offset = 0
    limit: Limit = 100


class BackfillTransition(Request, tag="backfill.transition"):
    backfill_id: Ident
    action: Literal["pause", "resume", "cancel"]
    expect_version: int | None = None
    request_id: RequestId | None = None


class BackfillRetryFailed(Request, tag="backfill.retry_failed"):
    backfill_id: Ident
    request_id: RequestId | None = None


class RunsPrune(Request, tag="runs.prune"):
    """Remove finished runs older than `older_than_s` (arcod/store/retention.py decides which)."""

    older_than_s: Annotated[float, msgspec.Meta(ge=0, le=100 * 365 * 86400)]
    dry_run: bool = False


REQUEST_TYPES = (
    Status, Reload, AssetsList, AssetsShow, Select, Run, RunsList, RunsShow, RunsTree,
    Cancel, Rerun, Logs, PartitionsList, PartitionsEdit,
    BackfillCreate, BackfillList, BackfillShow, BackfillChunks, BackfillPartitions, BackfillTransition,
    BackfillRetryFailed, RunsPrune,
)
AnyRequest = (
    Status | Reload | AssetsList | AssetsShow | Select | Run | RunsList | RunsShow | RunsTree
    | Cancel | Rerun | Logs | PartitionsList | PartitionsEdit
    | BackfillCreate | BackfillList | BackfillShow | BackfillChunks | BackfillPartitions | BackfillTransition
    | BackfillRetryFailed | RunsPrune
)
KNOWN_COMMANDS = tuple(t.__struct_config__.tag for t in REQUEST_TYPES)


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorFrame(msgspec.Struct, frozen=True):
    error: ErrorBody


class ResultFrame(msgspec.Struct, frozen=True):
    result: Any


class Reply(msgspec.Struct, frozen=True):
    """What a client decodes: exactly one of the two fields is set."""

    result: Any = None
    error: ErrorBody | None = None


request_decoder = msgspec.json.Decoder(AnyRequest)
reply_decoder = msgspec.json.Decoder(Reply)
encoder = msgspec.json.Encoder()


def encode_frame(obj: Any) -> bytes:
    return encoder.encode(obj) + b"\n"
