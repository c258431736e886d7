"""Partition requests: partition status of an asset, and dynamic partition keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arcod.daemon import Daemon


class PartitionHandlers:
    daemon: Daemon

    TABLE: dict = {}
