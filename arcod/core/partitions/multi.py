"""Multi partitions: the product of exactly two dimensions, in row-major order.

Dimensions are ordered by dimension name (as in Dagster), keys are `v1|v2` in that order, and
the position of `v1|v2` is `i1 * size2 + i2`. Each dimension is any non-multi definition, so
every question about a multi key reduces to two O(1) questions about its dimensions.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import ClassVar, Union

import msgspec

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions.dynamic import DynamicPartitions
from arcod.core.partitions.keys import MULTI_SEPARATOR
from arcod.core.partitions.protocol import check_index, check_span, needs_as_of, not_a_key
from arcod.core.partitions.static import StaticPartitions
from arcod.core.partitions.time_windows import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    WeeklyPartitions,
)

DimensionDefinition = Union[
    HourlyPartitions,
    DailyPartitions,
    WeeklyPartitions,
    MonthlyPartitions,
    StaticPartitions,
    DynamicPartitions,
]


class MultiPartitions(
    msgspec.Struct, frozen=True, kw_only=True, dict=True, tag_field="kind", tag="multi"
):
    """Two named dimensions; construct via `parse_definition` (which sorts and checks them)."""

    kind: ClassVar[str] = "multi"

    name: str
    dimensions: dict[str, DimensionDefinition]

    @cached_property
    def dims(self) -> tuple[tuple[str, DimensionDefinition], tuple[str, DimensionDefinition]]:
        """The two (dimension name, definition) pairs, outer (first by name) first."""
        outer, inner = sorted(self.dimensions.items())
        return outer, inner

    @property
    def dimension_names(self) -> tuple[str, str]:
        (outer, _), (inner, _) = self.dims
        return outer, inner

    @property
    def open_ended(self) -> bool:
        return any(d.open_ended for _, d in self.dims)

    def _inner_size(self, as_of: datetime | None) -> int:
        inner_size = self.dims[1][1]._limit(as_of)
        if inner_size is None:
            raise needs_as_of(self.name, "the position of a multi key (its inner dimension grows)")
        return inner_size

    def _limit(self, as_of: datetime | None) -> int | None:
        outer_size = self.dims[0][1]._limit(as_of)
        inner_size = self._inner_size(as_of)
        return None if outer_size is None else outer_size * inner_size

    def size(self, as_of: datetime | None = None) -> int:
        (_, outer), (_, inner) = self.dims
        return outer.size(as_of) * inner.size(as_of)

    def split(self, key: str) -> tuple[str, str]:
        """The two dimension values of `key`, refusing anything not shaped `v1|v2`."""
        parts = key.split(MULTI_SEPARATOR) if isinstance(key, str) else []
        if len(parts) != 2:
            raise not_a_key(self.name, self.kind, key, self._expected_form())
        return parts[0], parts[1]

    def dimension_indexes(self, key: str, as_of: datetime | None = None) -> tuple[int, int]:
        """(outer index, inner index) of `key`: multi keys sort by this pair."""
        values = self.split(key)
        found = []
        for (dim_name, defn), value in zip(self.dims, values):
            try:
                found.append(defn.index(value, as_of))
            except ArcodError as err:
                raise ArcodError(
                    PARTITION_ERROR,
                    f"{key!r} is not a partition of multi definition {self.name!r}: "
                    f"in dimension {dim_name!r}, {err.message}",
                    {"partitions": self.name, "key": key, "dimension": dim_name},
                ) from None
        return found[0], found[1]

    def index(self, key: str, as_of: datetime | None = None) -> int:
        outer, inner = self.dimension_indexes(key, as_of)
        return outer * self._inner_size(as_of) + inner

    def key(self, index: int, as_of: datetime | None = None) -> str:
        check_index(self.name, index, self._limit(as_of))
        return self._key_in_rows(index, self._inner_size(as_of))

    def key_range(self, start: int, stop: int, as_of: datetime | None = None) -> list[str]:
        check_span(self.name, start, stop, self._limit(as_of))
        inner_size = self._inner_size(as_of)
        return [self._key_in_rows(i, inner_size) for i in range(start, stop)]

    def _key_in_rows(self, index: int, inner_size: int) -> str:
        (_, outer), (_, inner) = self.dims
        row, column = divmod(index, inner_size)
        return join_multi_key(outer._key_at(row), inner._key_at(column))

    def _expected_form(self) -> str:
        (outer_name, outer), (inner_name, inner) = self.dims
        text = (
            f"expected '{outer_name}{MULTI_SEPARATOR}{inner_name}': one value per dimension, "
            f"in dimension-name order, joined by {MULTI_SEPARATOR!r}"
        )
        examples = [_example(outer), _example(inner)]
        if examples[0] is not None and examples[1] is not None:
            text += f", like {join_multi_key(examples[0], examples[1])!r}"
        return text


def _example(defn: DimensionDefinition) -> str | None:
    if isinstance(defn, (StaticPartitions, DynamicPartitions)):
        return defn.keys[0] if defn.keys else None
    return defn.first_key()


def join_multi_key(outer: str, inner: str) -> str:
    return f"{outer}{MULTI_SEPARATOR}{inner}"
