"""Persisted facts about definitions: every code_version ever loaded, and dynamic partition keys.

A run records the `code_version` it was planned with; keeping each version's asset
definitions here is what lets a run (or a rerun of it) execute exactly what it was planned
against, even after the files changed and the daemon reloaded.
"""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec

from arcod.core.definitions import AssetDef, Definitions
from arcod.store.database import Database, Transaction

assets_decoder = msgspec.json.Decoder(dict[str, AssetDef])


async def record_code_version(db: Database, defs: Definitions) -> None:
    body = msgspec.json.encode(defs.assets)
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO code_versions (code_version, assets, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (code_version) DO NOTHING",
            (defs.code_version, body, datetime.now(timezone.utc).isoformat()),
        )


async def assets_for_code_version(db: Database, code_version: str) -> dict[str, AssetDef]:
    row = await db.read_one("SELECT assets FROM code_versions WHERE code_version = ?", (code_version,))
    if row is None:
        raise LookupError(code_version)
    return assets_decoder.decode(row["assets"])


class AssetsByCodeVersion:
    """Asset definitions of each code_version, read once: a version's assets never change."""

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, AssetDef]] = {}

    async def get(self, tx: Transaction, code_version: str, asset: str) -> AssetDef:
        assets = self._cache.get(code_version)
        if assets is None:
            row = await tx.fetch_one("SELECT assets FROM code_versions WHERE code_version = ?", (code_version,))
            assets = self._cache[code_version] = assets_decoder.decode(row["assets"])
        return assets[asset]


async def dynamic_keys(db: Database) -> dict[str, list[str]]:
    rows = await db.read_all(
        "SELECT definition, key FROM dynamic_partitions ORDER BY definition, position"
    )
    keys: dict[str, list[str]] = {}
    for row in rows:
        keys.setdefault(row["definition"], []).append(row["key"])
    return keys
