"""The control socket's wire format: newline-delimited JSON frames of msgspec structs.

A client writes one request per line, `{"cmd": "...", ...fields}`, and reads one line back:
`{"result": {...}}` on success or `{"error": {"code", "message", "details"}}` on refusal.
Requests are a tagged union on `cmd`, so decoding a frame also validates every field's type
and names the bad one; there is no hand-written validation of wire input.

This module is imported by the CLI on every command, so it stays small and imports nothing
heavier than msgspec.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

MAX_FRAME_BYTES = 1 << 20  # 1 MiB, newline included

# Closure depth on the wire: None = no closure, -1 = unlimited, N >= 1 = depth N.
Depth = int | None


class Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="cmd", forbid_unknown_fields=True):
    pass


class Status(Request, tag="status"):
    pass


class Reload(Request, tag="reload"):
    pass


class AssetsList(Request, tag="assets.list"):
    select: str | None = None


class AssetsShow(Request, tag="assets.show"):
    key: str


class Select(Request, tag="select"):
    select: list[str]
    upstream: Depth = None
    downstream: Depth = None


class Run(Request, tag="run"):
    select: list[str]
    upstream: Depth = None
    downstream: Depth = None
    partition: str | None = None
    partitions: str | None = None
    run_key: str | None = None
    tags: dict[str, str] = {}


class RunsList(Request, tag="runs.list"):
    state: str | None = None
    backfill_id: str | None = None
    root_run_id: str | None = None
    limit: int = 50


class RunsShow(Request, tag="runs.show"):
    run_id: str


class RunsTree(Request, tag="runs.tree"):
    run_id: str


class Cancel(Request, tag="cancel"):
    run_id: str


class Rerun(Request, tag="rerun"):
    run_id: str
    kind: Literal["from_failure", "subset", "all"]
    select: list[str] = []
    upstream: Depth = None
    downstream: Depth = None
    run_key: str | None = None


class Logs(Request, tag="logs"):
    run_id: str
    asset: str | None = None
    partition: str | None = None
    offsets: dict[str, int] = {}  # attempt id -> bytes already read, for --follow


class PartitionsList(Request, tag="partitions.list"):
    asset: str
    state: str | None = None
    limit: int = 100


class PartitionsEdit(Request, tag="partitions.edit"):
    definition: str
    action: Literal["add", "remove"]
    keys: list[str]


REQUEST_TYPES = (
    Status, Reload, AssetsList, AssetsShow, Select, Run, RunsList, RunsShow, RunsTree,
    Cancel, Rerun, Logs, PartitionsList, PartitionsEdit,
)
AnyRequest = (
    Status | Reload | AssetsList | AssetsShow | Select | Run | RunsList | RunsShow | RunsTree
    | Cancel | Rerun | Logs | PartitionsList | PartitionsEdit
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
