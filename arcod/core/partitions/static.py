"""Static partitions: a fixed, ordered list of unique keys declared in a definition file.

The keys are kept as a tuple, in the order given, and located through a dict built on first
use, so `index` is one hash lookup and `key` one tuple access however many keys there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import ClassVar

import msgspec

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions.keys import key_problem
from arcod.core.partitions.protocol import check_index, check_span, not_a_key

_SHOWN_KEYS = 5  # how many keys a refusal lists before summarising


def check_keys(defn_name: str, keys: Sequence[str]) -> tuple[str, ...]:
    """`keys` as a tuple, refusing invalid or repeated keys (all problems reported at once)."""
    problems: list[str] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for key in keys:
        problem = key_problem(key)
        if problem is not None:
            problems.append(problem)
        elif key in seen:
            repeated.append(key)
        else:
            seen.add(key)
    if repeated:
        problems.append(
            "keys must be unique; repeated: " + ", ".join(repr(k) for k in sorted(set(repeated)))
        )
    if problems:
        raise ArcodError(
            PARTITION_ERROR,
            f"invalid keys for partitions {defn_name!r}: " + "; ".join(problems[:_SHOWN_KEYS])
            + (f"; and {len(problems) - _SHOWN_KEYS} more" if len(problems) > _SHOWN_KEYS else ""),
            {"partitions": defn_name, "problems": problems},
        )
    return tuple(keys)


def describe_keys(keys: Sequence[str]) -> str:
    """A short human list of `keys` for error messages: the first few and a count."""
    if not keys:
        return "it has no keys"
    shown = ", ".join(repr(k) for k in keys[:_SHOWN_KEYS])
    more = f", ... ({len(keys)} keys)" if len(keys) > _SHOWN_KEYS else ""
    return f"expected one of {shown}{more}"


class KeyedPartitions(msgspec.Struct, frozen=True, kw_only=True, dict=True, tag_field="kind"):
    """Behaviour shared by definitions that are an explicit list of keys."""

    kind: ClassVar[str]

    name: str
    keys: tuple[str, ...] = ()

    @cached_property
    def positions(self) -> dict[str, int]:
        return {key: position for position, key in enumerate(self.keys)}

    def size(self, as_of: datetime | None = None) -> int:
        return len(self.keys)

    def index(self, key: str, as_of: datetime | None = None) -> int:
        position = self.positions.get(key) if isinstance(key, str) else None
        if position is None:
            raise not_a_key(self.name, self.kind, key, self._expected())
        return position

    def key(self, index: int, as_of: datetime | None = None) -> str:
        return self.keys[check_index(self.name, index, len(self.keys))]

    def _limit(self, as_of: datetime | None) -> int:
        return len(self.keys)

    def _key_at(self, index: int) -> str:
        return self.keys[index]

    def key_range(self, start: int, stop: int, as_of: datetime | None = None) -> list[str]:
        check_span(self.name, start, stop, len(self.keys))
        return list(self.keys[start:stop])

    def _expected(self) -> str:
        return describe_keys(self.keys)


class StaticPartitions(KeyedPartitions, frozen=True, kw_only=True, dict=True, tag="static"):
    """Keys fixed by the definition file, in the order written there."""

    kind: ClassVar[str] = "static"

    @property
    def open_ended(self) -> bool:
        return False
