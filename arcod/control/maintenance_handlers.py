"""Maintenance requests: retention (`arcod runs prune`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from arcod.control import protocol as p
from arcod.store import retention

if TYPE_CHECKING:
    from arcod.daemon import Daemon


class MaintenanceHandlers:
    daemon: Daemon

    TABLE = {
        p.RunsPrune: "runs_prune",
    }

    async def runs_prune(self, req: p.RunsPrune) -> dict:
        report = await retention.prune(
            self.daemon.db, logs_dir=self.daemon.settings.logs_dir, older_than_s=req.older_than_s,
            dry_run=req.dry_run)
        return msgspec.to_builtins(report)
