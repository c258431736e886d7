"""Filters that name tasks of one run (`arcod logs RUN --asset KEY --partition KEY`).

A filter that matches no task of the run is a mistake (a typo, the wrong run), not an empty
answer: it is refused with `not_found`, naming what the run does hold so the next attempt
can be right. A filter that names a task with no attempt yet (pending, skipped) is fine: its
logs are simply empty so far.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from arcod.core.asset_keys import validate_asset_key
from arcod.core.errors import NOT_FOUND, ArcodError

ASSETS_SHOWN = 20  # assets a refusal lists (details carry up to DETAILS_LIMIT)
PARTITIONS_SHOWN = 5  # partitions a refusal lists: the first ones, then the last
DETAILS_LIMIT = 100


def _unique(values: Iterable[str | None]) -> list[str]:
    return [v for v in dict.fromkeys(values) if v is not None]


def _sample(values: Sequence[str], limit: int) -> str:
    """`a, b, c` or, past `limit`, the first ones, `...`, the last one and the count."""
    if len(values) <= limit:
        return ", ".join(values)
    return f"{', '.join(values[:limit - 1])}, ..., {values[-1]} ({len(values)} in all)"


def check_task_filter(
    run_id: str, tasks: Sequence[tuple[str, str | None]], asset: str | None, partition: str | None
) -> None:
    """Refuse a filter no task of the run matches. `tasks` are the run's (asset, partition)
    pairs in plan order (partition None when unpartitioned)."""
    if asset is not None:
        validate_asset_key(asset)
        assets = _unique(a for a, _ in tasks)
        if asset not in assets:
            raise ArcodError(
                NOT_FOUND,
                f"run {run_id} has no task for asset {asset!r}; its assets: {_sample(assets, ASSETS_SHOWN)}",
                {"what": "asset", "id": asset, "run_id": run_id, "assets": assets[:DETAILS_LIMIT]},
            )
    if partition is None:
        return
    scope = "" if asset is None else f" of asset {asset}"
    partitions = _unique(p for a, p in tasks if asset is None or a == asset)
    if partition in partitions:
        return
    details = {"what": "partition", "id": partition, "run_id": run_id, "asset": asset,
               "partitions": partitions[:DETAILS_LIMIT], "partitions_total": len(partitions)}
    if not partitions:
        raise ArcodError(
            NOT_FOUND,
            f"run {run_id} has no partitioned task{scope}, so no partition {partition!r}; leave out --partition",
            details,
        )
    raise ArcodError(
        NOT_FOUND,
        f"run {run_id} has no task for partition {partition!r}{scope}; its partitions{scope}: "
        f"{_sample(partitions, PARTITIONS_SHOWN)}",
        details,
    )
