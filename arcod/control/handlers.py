"""What the daemon does for each control request.

Each handler takes a decoded request struct and returns builtins for the `result` field, or
raises `ArcodError`. Decisions are delegated to `arcod.core`; handlers only gather the inputs
(current definitions, stored rows) and shape the answer with the SPEC's field names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from arcod.control import protocol as p
from arcod.control.backfill_handlers import BackfillHandlers
from arcod.control.maintenance_handlers import MaintenanceHandlers
from arcod.control.partition_handlers import PartitionHandlers
from arcod.control.run_handlers import RunHandlers
from arcod.core import errors
from arcod.core.definitions import AssetDef, Definitions
from arcod.core.errors import ArcodError
from arcod.core.selection import (
    Resolution,
    SelectionRequest,
    describe_reason,
    resolve_request,
)

if TYPE_CHECKING:
    from arcod.daemon import Daemon


def resolve(defs: Definitions, select: list[str], upstream: int | None, downstream: int | None) -> Resolution:
    if not select:
        raise ArcodError(errors.BAD_REQUEST, "give at least one selection, e.g. --select 'group:ingest'")
    req = SelectionRequest(select=tuple(select), upstream=upstream, downstream=downstream)
    return resolve_request(req, defs.graph, defs.assets)


def asset_summary(asset: AssetDef) -> dict[str, Any]:
    return {
        "key": asset.key,
        "group": asset.group,
        "partitions": asset.partitions,
        "deps": list(asset.dep_keys),
        "tags": asset.tags,
        "kinds": list(asset.kinds),
        "owners": list(asset.owners),
    }


class Handlers(RunHandlers, PartitionHandlers, BackfillHandlers, MaintenanceHandlers):
    """Every request the daemon serves. Each area's mixin declares `TABLE`: request type ->
    method name; the tables are merged here so adding an area is one mixin and one base."""

    TABLE = {
        p.Status: "status",
        p.Reload: "reload",
        p.AssetsList: "assets_list",
        p.AssetsShow: "assets_show",
        p.Select: "select",
    }

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._table: dict[type, Callable[[Any], Awaitable[Any]]] = {}
        for cls in reversed(type(self).__mro__):
            for request_type, method in getattr(cls, "TABLE", {}).items():
                self._table[request_type] = getattr(self, method)

    async def handle(self, request: p.Request) -> Any:
        handler = self._table.get(type(request))
        if handler is None:
            raise ArcodError(
                errors.UNKNOWN_COMMAND,
                f"command {request.__struct_config__.tag!r} is not served by this daemon version",
            )
        return await handler(request)

    @property
    def defs(self) -> Definitions:
        assert self.daemon.definitions is not None
        return self.daemon.definitions

    async def status(self, req: p.Status) -> dict:
        return await self.daemon.status()

    async def reload(self, req: p.Reload) -> dict:
        return await self.daemon.reload()

    async def assets_list(self, req: p.AssetsList) -> dict:
        defs = self.defs
        keys = resolve(defs, [req.select], None, None).keys if req.select else sorted(defs.assets)
        return {"assets": [asset_summary(defs.assets[k]) for k in keys]}

    async def assets_show(self, req: p.AssetsShow) -> dict:
        defs = self.defs
        asset = defs.asset(req.key)
        out = asset_summary(asset)
        command = asset.command
        out.update(
            {
                "source_file": asset.source_file,
                "description": asset.description,
                "command": list(command) if isinstance(command, tuple) else command,
                "python": asset.python,
                "retries": {"max": asset.retries.max, "delay_s": asset.retries.delay_s, "backoff": asset.retries.backoff},
                "timeout_s": asset.timeout_s,
                "children": list(defs.graph.children(asset.key)),
                "code_version": defs.code_version,
            }
        )
        return out

    async def select(self, req: p.Select) -> dict:
        res = resolve(self.defs, req.select, req.upstream, req.downstream)
        return {
            "keys": list(res.keys),
            "explain": [
                {
                    "key": key,
                    "reason": res.reasons[key].kind,
                    "of": res.reasons[key].of,
                    "depth": res.reasons[key].depth,
                    "matched": res.reasons[key].matched,
                    "text": describe_reason(res.reasons[key]),
                }
                for key in res.keys
            ],
        }
