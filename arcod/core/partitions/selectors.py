"""Partition selectors: compact descriptions of a set of partitions, never expanded.

A selector is what an operator typed (`all`, `A..B`, `a,b,c`, or per dimension of a multi
definition `date=A..B;region=eu,us`), checked against a definition and put in one canonical
form, so two requests for the same partitions have the same fingerprint. It is stored as
given: a backfill over a million hourly windows stores two keys. Counting and paging work by
position arithmetic on the definition (`index`/`key_range`), costing O(1) and O(page) however
large the selection; only an explicit key list costs anything per key, and it was typed.

Multi selectors are products: the partitions are every pairing of the dimensions'
selections, in the multi definition's row-major order.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_left
from collections.abc import Callable
from datetime import datetime
from typing import Any, Union

import msgspec

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions.multi import MultiPartitions, join_multi_key
from arcod.core.partitions.protocol import PartitionsDefinition, instant

RANGE_SEPARATOR = ".."
LIST_SEPARATOR = ","
DIMENSION_SEPARATOR = ";"
_DIMENSION_PREFIX = re.compile(r"\s*([A-Za-z0-9_]+)\s*=")
_FORMS = "'all', a key, a range 'A..B' (inclusive) or a list 'a,b,c'"
_MULTI_FORMS = _FORMS + ", or per dimension 'NAME=SELECTION;NAME=SELECTION'"


class AllSelector(msgspec.Struct, frozen=True, tag_field="kind", tag="all"):
    """Every partition of the definition (see `pin_as_of` for definitions that grow)."""


class RangeSelector(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="range"):
    """The partitions from `start` to `end`, both inclusive, in definition order."""

    start: str
    end: str


class KeysSelector(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="keys"):
    """Explicit keys; canonical form is deduplicated and in definition order."""

    keys: tuple[str, ...]


DimensionSelector = Union[AllSelector, RangeSelector, KeysSelector]


class MultiSelector(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="multi"):
    """One selector per dimension of a multi definition; selects their product.

    Canonical form names both dimensions, in name order, and is never both-`all` (that is
    `AllSelector`).
    """

    dims: dict[str, DimensionSelector]


PartitionSelector = Union[AllSelector, RangeSelector, KeysSelector, MultiSelector]


def _refuse(defn: PartitionsDefinition, message: str, **details: Any) -> ArcodError:
    return ArcodError(PARTITION_ERROR, message, {"partitions": defn.name, **details})


# -- parsing and canonical form ---------------------------------------------------------------


def parse_selector(
    text: str, defn: PartitionsDefinition, as_of: datetime | None = None
) -> PartitionSelector:
    """The canonical selector for CLI text, checked key by key against `defn`.

    With `as_of`, keys of an open-ended time definition must also be complete by then.
    """
    forms = _MULTI_FORMS if isinstance(defn, MultiPartitions) else _FORMS
    if not isinstance(text, str) or not text.strip():
        raise _refuse(defn, f"empty partition selection; expected {forms}")
    text = text.strip()
    if isinstance(defn, MultiPartitions) and _DIMENSION_PREFIX.match(text):
        selector: PartitionSelector = _parse_dimensions(text, defn)
    else:
        selector = _parse_simple(text, defn, forms)
    return validate_selector(selector, defn, as_of)


def _parse_simple(text: str, defn: PartitionsDefinition, forms: str) -> DimensionSelector:
    if text == "all":
        return AllSelector()
    if RANGE_SEPARATOR in text:
        if LIST_SEPARATOR in text:
            raise _refuse(
                defn,
                f"{text!r} mixes a range and a list; give one range 'A..B' or one list 'a,b,c'",
            )
        ends = [part.strip() for part in text.split(RANGE_SEPARATOR)]
        if len(ends) != 2 or not all(ends):
            raise _refuse(
                defn, f"{text!r} is not a range: expected 'A..B' with a key on each side"
            )
        return RangeSelector(start=ends[0], end=ends[1])
    keys = [part.strip() for part in text.split(LIST_SEPARATOR)]
    if not all(keys):
        raise _refuse(defn, f"{text!r} has an empty item; expected {forms}")
    return KeysSelector(keys=tuple(keys))


def _parse_dimensions(text: str, defn: MultiPartitions) -> MultiSelector:
    dims: dict[str, DimensionSelector] = {}
    for part in text.split(DIMENSION_SEPARATOR):
        name, equals, rest = part.partition("=")
        name = name.strip()
        if not equals or not name:
            raise _refuse(
                defn,
                f"{part.strip()!r} is not a dimension selection: expected 'NAME=SELECTION' "
                f"with NAME one of {', '.join(defn.dimension_names)}",
            )
        if name in dims:
            raise _refuse(defn, f"dimension {name!r} is selected twice; give it once")
        dims[name] = _parse_simple(rest.strip(), defn, _FORMS)  # unknown names: validate_selector
    return MultiSelector(dims=dims)


def validate_selector(
    selector: PartitionSelector, defn: PartitionsDefinition, as_of: datetime | None = None
) -> PartitionSelector:
    """`selector` checked against `defn` and put in canonical form.

    The single gate for selectors however they arrive (CLI text, JSON over the socket): every
    key is located in the definition, ranges must run forwards, key lists are deduplicated
    and sorted into definition order, multi selectors name every dimension.
    """
    if isinstance(selector, AllSelector):
        return AllSelector()
    if isinstance(selector, RangeSelector):
        return _validate_range(selector, defn, as_of)
    if isinstance(selector, KeysSelector):
        return _validate_keys(selector, defn, as_of)
    if isinstance(selector, MultiSelector):
        return _validate_multi(selector, defn, as_of)
    raise _refuse(defn, f"not a partition selector: {selector!r}; expected {_FORMS}")


def _validate_range(
    selector: RangeSelector, defn: PartitionsDefinition, as_of: datetime | None
) -> RangeSelector:
    if not isinstance(selector.start, str) or not isinstance(selector.end, str):
        raise _refuse(defn, "a range needs two keys, 'A..B'")
    order = _order(defn, as_of)
    first, last = order(selector.start), order(selector.end)
    if first > last:
        raise _refuse(
            defn,
            f"range {selector.start}..{selector.end} runs backwards: {selector.end!r} comes "
            f"before {selector.start!r} in {defn.name!r}; write {selector.end}..{selector.start}",
            start=selector.start,
            end=selector.end,
        )
    if isinstance(defn, MultiPartitions) and first[0] != last[0]:  # type: ignore[index]
        inner_name, inner = defn.dims[1]
        if inner.open_ended:
            raise _refuse(
                defn,
                f"range {selector.start}..{selector.end} spans several rows of dimension "
                f"{inner_name!r}, which gains partitions over time, so the range would grow; "
                f"select per dimension instead, like "
                f"'{defn.dims[0][0]}=A..B;{inner_name}=C..D'",
            )
    return RangeSelector(start=selector.start, end=selector.end)


def _validate_keys(
    selector: KeysSelector, defn: PartitionsDefinition, as_of: datetime | None
) -> KeysSelector:
    keys = selector.keys
    if isinstance(keys, str) or not keys:
        raise _refuse(defn, f"a key list needs at least one key; expected {_FORMS}")
    order = _order(defn, as_of)
    ranked = {key: order(key) for key in keys}  # dedupes; order() refuses unknown keys
    return KeysSelector(keys=tuple(sorted(ranked, key=ranked.__getitem__)))


def _validate_multi(
    selector: MultiSelector, defn: PartitionsDefinition, as_of: datetime | None
) -> PartitionSelector:
    if not isinstance(defn, MultiPartitions):
        raise _refuse(
            defn,
            f"{defn.name!r} is a {defn.kind} definition, not multi: it has no dimensions to "
            f"select; expected {_FORMS}",
        )
    names = defn.dimension_names
    dims: dict[str, DimensionSelector] = {}
    for name in selector.dims:
        if name not in names:
            match = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise _refuse(
                defn,
                f"unknown dimension {name!r}{hint}; {defn.name!r} has dimensions "
                f"{' and '.join(repr(n) for n in names)}",
                dimension=name,
            )
    for name, dim_defn in defn.dims:
        sub = selector.dims.get(name, AllSelector())
        if isinstance(sub, MultiSelector):
            raise _refuse(
                defn,
                f"dimension {name!r} takes 'all', a key, a range or a list, "
                "not another multi selection",
            )
        try:
            dims[name] = validate_selector(sub, dim_defn, as_of)  # type: ignore[assignment]
        except ArcodError as err:
            raise ArcodError(
                err.code, f"in dimension {name!r} of {defn.name!r}: {err.message}",
                {**err.details, "partitions": defn.name, "dimension": name},
            ) from None
    if all(isinstance(sub, AllSelector) for sub in dims.values()):
        return AllSelector()
    return MultiSelector(dims=dims)


def _order(defn: PartitionsDefinition, as_of: datetime | None) -> Callable[[str], Any]:
    """Sort key of a partition key in definition order; refuses keys not in `defn`.

    Multi keys sort by their (outer, inner) dimension positions, which is the row-major order
    without needing the inner dimension's size (unknown for open-ended time without as_of).
    """
    if isinstance(defn, MultiPartitions):
        return lambda key: defn.dimension_indexes(key, as_of)
    return lambda key: defn.index(key, as_of)


# -- counting and paging ----------------------------------------------------------------------


def selector_count(
    selector: PartitionSelector, defn: PartitionsDefinition, as_of: datetime | None = None
) -> int:
    """How many partitions `selector` selects, by arithmetic (no key is generated).

    `as_of` is needed only where the answer depends on time: `all` of an open-ended time
    definition (pin it first) or a row-spanning range over a multi definition.
    """
    if isinstance(selector, AllSelector):
        return defn.size(as_of)
    if isinstance(selector, KeysSelector):
        return len(selector.keys)
    if isinstance(selector, RangeSelector):
        return _range_count(selector, defn, as_of)
    if isinstance(selector, MultiSelector):
        outer, inner = _dimension_parts(selector, defn)
        return selector_count(outer[0], outer[1], as_of) * selector_count(inner[0], inner[1], as_of)
    raise _refuse(defn, f"not a partition selector: {selector!r}")


def selector_slice(
    selector: PartitionSelector,
    defn: PartitionsDefinition,
    offset: int,
    limit: int,
    as_of: datetime | None = None,
    *,
    descending: bool = False,
) -> list[str]:
    """The keys at positions [offset, offset + limit) of the selection, in definition order
    (or newest first with `descending`), in O(limit) (+ O(log n) for key lists).
    """
    for name, value in (("offset", offset), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _refuse(defn, f"{name} must be a non-negative integer, not {value!r}")
    total = selector_count(selector, defn, as_of)
    low, high = min(offset, total), min(offset + limit, total)
    if not descending:
        return _ascending(selector, defn, low, high, as_of)
    keys = _ascending(selector, defn, total - high, total - low, as_of)
    keys.reverse()
    return keys


def _ascending(
    selector: PartitionSelector,
    defn: PartitionsDefinition,
    low: int,
    high: int,
    as_of: datetime | None,
) -> list[str]:
    """Keys at selection positions [low, high), which the caller has bounded by the count."""
    if low >= high:
        return []
    if isinstance(selector, AllSelector):
        return defn.key_range(low, high, as_of)
    if isinstance(selector, KeysSelector):
        return list(selector.keys[low:high])
    if isinstance(selector, RangeSelector):
        return _range_keys(selector, defn, low, high, as_of)
    if isinstance(selector, MultiSelector):
        (outer_sel, outer_defn), (inner_sel, inner_defn) = _dimension_parts(selector, defn)
        width = selector_count(inner_sel, inner_defn, as_of)
        first_row, last_row = low // width, (high - 1) // width
        rows = _ascending(outer_sel, outer_defn, first_row, last_row + 1, as_of)
        keys: list[str] = []
        for row, outer_key in enumerate(rows, start=first_row):
            begin = low - row * width if row == first_row else 0
            end = high - row * width if row == last_row else width
            keys.extend(
                join_multi_key(outer_key, inner_key)
                for inner_key in _ascending(inner_sel, inner_defn, begin, end, as_of)
            )
        return keys
    raise _refuse(defn, f"not a partition selector: {selector!r}")


def _range_count(
    selector: RangeSelector, defn: PartitionsDefinition, as_of: datetime | None
) -> int:
    """Keys in a range, from two positions. A multi range inside one row needs no row width
    (so no as_of); one spanning rows is only allowed where the width cannot grow.
    """
    if isinstance(defn, MultiPartitions):
        a_row, a_col = defn.dimension_indexes(selector.start, as_of)
        b_row, b_col = defn.dimension_indexes(selector.end, as_of)
        width = 0 if a_row == b_row else defn._inner_size(as_of)
        count = (b_row - a_row) * width + b_col - a_col + 1
    else:
        count = defn.index(selector.end, as_of) - defn.index(selector.start, as_of) + 1
    if count <= 0:
        raise _refuse(
            defn,
            f"range {selector.start}..{selector.end} runs backwards; "
            f"write {selector.end}..{selector.start}",
        )
    return count


def _range_keys(
    selector: RangeSelector,
    defn: PartitionsDefinition,
    low: int,
    high: int,
    as_of: datetime | None,
) -> list[str]:
    """Keys at range positions [low, high), already bounded by the range's count."""
    if isinstance(defn, MultiPartitions):
        a_row, a_col = defn.dimension_indexes(selector.start, as_of)
        b_row, _ = defn.dimension_indexes(selector.end, as_of)
        if a_row == b_row:
            (_, outer), (_, inner) = defn.dims
            row_key = outer._key_at(a_row)
            row = inner.key_range(a_col + low, a_col + high, as_of)
            return [join_multi_key(row_key, k) for k in row]
        base = a_row * defn._inner_size(as_of) + a_col
    else:
        base = defn.index(selector.start, as_of)
    return defn.key_range(base + low, base + high, as_of)


def _dimension_parts(
    selector: MultiSelector, defn: PartitionsDefinition
) -> tuple[tuple[DimensionSelector, Any], tuple[DimensionSelector, Any]]:
    if not isinstance(defn, MultiPartitions):
        raise _refuse(
            defn,
            f"a per-dimension selection needs a multi definition; {defn.name!r} is {defn.kind}",
        )
    (outer_name, outer), (inner_name, inner) = defn.dims
    return (
        (selector.dims.get(outer_name, AllSelector()), outer),
        (selector.dims.get(inner_name, AllSelector()), inner),
    )


def selector_contains(
    selector: PartitionSelector, defn: PartitionsDefinition, key: str, as_of: datetime | None = None
) -> bool:
    """Whether `key` is selected; False also for keys that are not partitions of `defn`
    (or, with `as_of`, not complete by then).
    """
    order = _order(defn, as_of)
    try:
        rank = order(key)
    except ArcodError:
        return False
    if isinstance(selector, AllSelector):
        return True
    if isinstance(selector, RangeSelector):
        return order(selector.start) <= rank <= order(selector.end)
    if isinstance(selector, KeysSelector):
        position = bisect_left(selector.keys, rank, key=order)
        return position < len(selector.keys) and selector.keys[position] == key
    if isinstance(selector, MultiSelector) and isinstance(defn, MultiPartitions):
        values = defn.split(key)
        parts = _dimension_parts(selector, defn)
        return all(
            selector_contains(sub, dim_defn, value, as_of)
            for (sub, dim_defn), value in zip(parts, values)
        )
    return False


# -- pinning, storage, display ------------------------------------------------------------------


def pin_as_of(
    selector: PartitionSelector, defn: PartitionsDefinition, as_of: datetime
) -> PartitionSelector:
    """`selector` with the upper end of every growing definition fixed at `as_of`.

    `all` over an open-ended time definition (or a dynamic one) becomes the explicit range
    from the first key to the last one present at `as_of`; per-dimension selections are pinned
    dimension by dimension. Ranges and key lists already name their last key. The result
    selects the same partitions whenever it is evaluated, and needs no `as_of` to count or
    page. A selection that would pin to nothing is refused.
    """
    instant(as_of)  # refuses a naive as_of
    if isinstance(defn, MultiPartitions):
        if isinstance(selector, AllSelector):
            selector = MultiSelector(dims={name: AllSelector() for name in defn.dimension_names})
        if not isinstance(selector, MultiSelector):
            return selector
        pinned = {
            name: pin_as_of(selector.dims.get(name, AllSelector()), dim_defn, as_of)
            for name, dim_defn in defn.dims
        }
        if all(isinstance(sub, AllSelector) for sub in pinned.values()):
            return AllSelector()
        return MultiSelector(dims=pinned)  # type: ignore[arg-type]
    if not isinstance(selector, AllSelector) or not defn.open_ended:
        return selector
    size = defn.size(as_of)
    if size == 0:
        raise _refuse(
            defn,
            f"{defn.name!r} has no partitions as of {as_of.isoformat()}, so 'all' selects "
            "nothing; wait for the first window to complete or add keys",
        )
    return RangeSelector(start=defn.key(0, as_of), end=defn.key(size - 1, as_of))


def selector_to_dict(selector: PartitionSelector) -> dict[str, Any]:
    """Plain JSON-ready form (`{"kind": "range", "start": ..., "end": ...}`); canonical when
    the selector is (it came from `parse_selector`/`validate_selector`), so it can be hashed
    into a fingerprint directly.
    """
    return msgspec.json.decode(msgspec.json.encode(selector))


def selector_from_dict(data: Any) -> PartitionSelector:
    """Inverse of `selector_to_dict`. Structure only: validate against a definition with
    `validate_selector` before use.
    """
    try:
        return msgspec.convert(data, PartitionSelector)  # type: ignore[arg-type]
    except msgspec.ValidationError as err:
        raise ArcodError(
            PARTITION_ERROR,
            f"not a partition selector ({err}); expected an object with kind 'all', "
            "'range' (start, end), 'keys' (keys) or 'multi' (dims)",
            {},
        ) from None


def format_selector(selector: PartitionSelector) -> str:
    """The CLI text that `parse_selector` reads back to the same selector."""
    if isinstance(selector, AllSelector):
        return "all"
    if isinstance(selector, RangeSelector):
        return f"{selector.start}{RANGE_SEPARATOR}{selector.end}"
    if isinstance(selector, KeysSelector):
        return LIST_SEPARATOR.join(selector.keys)
    return DIMENSION_SEPARATOR.join(
        f"{name}={format_selector(sub)}" for name, sub in sorted(selector.dims.items())
    )
