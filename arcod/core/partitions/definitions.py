"""Partitions definitions from `[partitions.NAME]` TOML tables, with refusals that teach.

Every mistake in a definition file is an `ArcodError(DEFINITIONS_ERROR)` whose message says
what was expected (valid kinds, the nearest field name, the form of a date) and whose details
name the definition, so the loader only has to add the file. Nothing is defaulted silently
except what SPEC §3 and Dagster default (timezone UTC, Dagster's key formats, Sunday weeks,
the first of the month).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from arcod.core.errors import DEFINITIONS_ERROR, ArcodError
from arcod.core.partitions.dynamic import DynamicPartitions
from arcod.core.partitions.keys import key_problem
from arcod.core.partitions.multi import DimensionDefinition, MultiPartitions
from arcod.core.partitions.static import StaticPartitions, check_keys
from arcod.core.partitions.time_windows import (
    DATE_FMT,
    HOURLY_FMT,
    MIN_YEAR,
    POST_DST_SUFFIX,
    TIME_KINDS,
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    TimeWindowPartitions,
    WeeklyPartitions,
)

AnyPartitionsDefinition = Union[
    HourlyPartitions,
    DailyPartitions,
    WeeklyPartitions,
    MonthlyPartitions,
    StaticPartitions,
    DynamicPartitions,
    MultiPartitions,
]

KINDS = ("hourly", "daily", "weekly", "monthly", "static", "dynamic", "multi")

_TIME_FIELDS = ("kind", "start", "end", "timezone", "fmt", "end_offset")
FIELDS: dict[str, tuple[str, ...]] = {
    "hourly": _TIME_FIELDS,
    "daily": _TIME_FIELDS,
    "weekly": (*_TIME_FIELDS, "day_offset"),
    "monthly": (*_TIME_FIELDS, "day_offset"),
    "static": ("kind", "keys"),
    "dynamic": ("kind",),
    "multi": ("kind", "dimensions"),
}

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_DIMENSION_NAME = re.compile(r"[A-Za-z0-9_]+\Z")

# Sample instants a custom `fmt` must reproduce exactly, so keys parse back to their window.
_FMT_SAMPLE_DATES = (date(2001, 2, 3), date(1999, 12, 31), date(2024, 2, 29), date(2099, 11, 28))
_FMT_SAMPLE_HOURS = (datetime(2001, 2, 3, 4, 0), datetime(2099, 12, 30, 23, 30))


def _fail(name: str, message: str, **details: Any) -> ArcodError:
    return ArcodError(
        DEFINITIONS_ERROR, f"partitions {name!r}: {message}", {"partitions": name, **details}
    )


def _nearest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def parse_definitions(
    tables: Mapping[str, Mapping[str, Any]],
) -> dict[str, AnyPartitionsDefinition]:
    """The whole `[partitions]` table, in file order. Multi definitions may name the others."""
    if not isinstance(tables, Mapping):
        raise ArcodError(
            DEFINITIONS_ERROR,
            "[partitions] must be a table of definitions, like [partitions.daily]",
            {},
        )
    parsed: dict[str, AnyPartitionsDefinition] = {}
    for name, table in tables.items():
        if not (isinstance(table, Mapping) and table.get("kind") == "multi"):
            parsed[name] = parse_definition(name, table)
    multis = [name for name in tables if name not in parsed]  # file order: stable errors
    for name in multis:
        dimensions = tables[name].get("dimensions")
        for dim_name, spec in dimensions.items() if isinstance(dimensions, Mapping) else ():
            if isinstance(spec, str) and spec in multis:
                raise _fail(
                    name,
                    f"dimension {dim_name!r} names {spec!r}, which is itself multi; a multi "
                    "definition has exactly two non-multi dimensions",
                    field="dimensions",
                    dimension=dim_name,
                )
    for name, table in tables.items():
        if name not in parsed:
            parsed[name] = parse_definition(name, table, parsed)
    return {name: parsed[name] for name in tables}


def parse_definition(
    name: str,
    table: Mapping[str, Any],
    known: Mapping[str, AnyPartitionsDefinition] | None = None,
) -> AnyPartitionsDefinition:
    """One definition from its `[partitions.NAME]` table.

    `known` holds the already-parsed definitions a multi definition may name as dimensions.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(
            str(name),
            "a partitions name must be letters, digits, '_', '.' or '-' "
            "(starting with a letter, digit or '_')",
        )
    if not isinstance(table, Mapping):
        raise _fail(name, f"expected a table like [partitions.{name}] with a `kind`")
    kind = table.get("kind")
    if kind is None:
        raise _fail(name, f"missing `kind`; expected one of {', '.join(KINDS)}", field="kind")
    if kind not in FIELDS:
        raise _fail(
            name,
            f"unknown kind {kind!r}{_nearest(str(kind), KINDS)}; "
            f"expected one of {', '.join(KINDS)}",
            field="kind",
        )
    allowed = FIELDS[kind]
    for field in table:
        if field not in allowed:
            raise _fail(
                name,
                f"unknown field {field!r} for kind {kind!r}{_nearest(str(field), allowed)}; "
                f"allowed fields: {', '.join(sorted(allowed))}",
                field=field,
            )
    if kind in TIME_KINDS:
        return _time_definition(name, kind, table)
    if kind == "static":
        return _static_definition(name, table)
    if kind == "dynamic":
        return DynamicPartitions(name=name)
    return _multi_definition(name, table, known or {})


# -- time windows -------------------------------------------------------------------------


def _time_definition(name: str, kind: str, table: Mapping[str, Any]) -> TimeWindowPartitions:
    timezone = table.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise _fail(
            name, "`timezone` must be an IANA zone name like 'Europe/London'", field="timezone"
        )
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(
            name,
            f"unknown timezone {timezone!r}; "
            "expected an IANA name like 'UTC' or 'America/New_York'",
            field="timezone",
        ) from None

    default_fmt = HOURLY_FMT if kind == "hourly" else DATE_FMT
    fmt = table.get("fmt", default_fmt)
    if not isinstance(fmt, str) or not fmt:
        raise _fail(name, f"`fmt` must be a strftime format like {default_fmt!r}", field="fmt")
    _check_fmt(name, kind, fmt, tz)

    if "start" not in table:
        raise _fail(
            name, "missing `start`; expected the first window's date, like '2024-01-01'",
            field="start",
        )
    start = _instant(name, "start", table["start"], tz, fmt)
    end = None if table.get("end") is None else _instant(name, "end", table["end"], tz, fmt)

    end_offset = table.get("end_offset", 0)
    if isinstance(end_offset, bool) or not isinstance(end_offset, int):
        raise _fail(
            name, "`end_offset` must be an integer number of windows, like 1", field="end_offset"
        )
    if end is not None and end_offset:
        raise _fail(
            name,
            "`end_offset` extends an open-ended definition past the last complete window; "
            "with a fixed `end` it has no meaning: remove one of them",
            field="end_offset",
        )

    fields: dict[str, Any] = {"name": name, "start": start, "end": end, "timezone": timezone,
                              "fmt": fmt, "end_offset": end_offset}
    if kind == "weekly":
        fields["day_offset"] = _day_offset(name, table, 0, 0, 6, "0 (Sunday) to 6 (Saturday)")
    elif kind == "monthly":
        fields["day_offset"] = _day_offset(name, table, 1, 1, 28, "1 to 28")
    defn = TIME_KINDS[kind](**fields)

    try:
        defn.first_key()
        if end is not None:
            count = defn.size()
    except ArcodError:
        raise _fail(
            name, "`start` is too late: its first window lies past the year 9999", field="start"
        ) from None
    if end is not None and count == 0:
        raise _fail(
            name,
            f"`end` {end.isoformat()} leaves no complete window: the first {kind} window starts "
            f"at {datetime.fromtimestamp(defn._bounds_at(0)[0], tz).isoformat()}; move `end` later",
            field="end",
        )
    return defn


def _day_offset(
    name: str, table: Mapping[str, Any], default: int, low: int, high: int, what: str
) -> int:
    value = table.get("day_offset", default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(
            name, f"`day_offset` must be an integer from {what}, not {value!r}",
            field="day_offset",
        )
    return value


def _instant(name: str, field: str, value: Any, tz: ZoneInfo, fmt: str) -> datetime:
    """A `start`/`end` value (TOML date or datetime, or a string) as an aware datetime in `tz`.

    Naive values are wall-clock times in the definition's zone (an ambiguous one means its
    first occurrence); values with an offset are instants.
    """
    expected = (
        f"`{field}` must be a date or datetime like '2024-01-01' or '2024-01-01T06:00' "
        "(optionally with an offset like '+01:00')"
    )
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        parsed = _parse_datetime_text(value.strip(), fmt)
        if parsed is None:
            raise _fail(name, f"{expected}, not {value!r}", field=field)
    elif isinstance(value, time):
        raise _fail(name, f"{expected}; a time of day alone is not enough", field=field)
    else:
        raise _fail(name, f"{expected}, not {value!r}", field=field)
    if parsed.year < MIN_YEAR:
        raise _fail(name, f"`{field}` must be in the year {MIN_YEAR} or later", field=field)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=tz, fold=0)
    try:
        return parsed.astimezone(tz)
    except (OverflowError, ValueError):
        raise _fail(
            name, f"`{field}` {value!r} is outside the supported calendar", field=field
        ) from None


def _parse_datetime_text(text: str, fmt: str) -> datetime | None:
    if text.endswith(POST_DST_SUFFIX):
        text, fold = text[: -len(POST_DST_SUFFIX)], 1
    else:
        fold = 0
    for parse in (datetime.fromisoformat, lambda t: datetime.strptime(t, fmt)):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        return parsed.replace(fold=fold) if parsed.tzinfo is None else parsed
    return None


def _check_fmt(name: str, kind: str, fmt: str, tz: ZoneInfo) -> None:
    """Refuse a custom key format that cannot name every window uniquely and read it back."""
    if kind == "hourly":
        samples = list(_FMT_SAMPLE_HOURS)
        need = "year, month, day, hour and minute"
    else:
        samples = [datetime(d.year, d.month, d.day) for d in _FMT_SAMPLE_DATES]
        need = "year, month and day"
    width = 5 if kind == "hourly" else 3  # how many of (Y, m, d, H, M) must survive
    for sample in samples:
        text = sample.replace(tzinfo=tz).strftime(fmt)
        try:
            back = datetime.strptime(text, fmt)
        except ValueError:
            back = None
        fields = (sample.year, sample.month, sample.day, sample.hour, sample.minute)[:width]
        read = None if back is None else (back.year, back.month, back.day, back.hour, back.minute)
        if read is None or read[:width] != fields:
            raise _fail(
                name,
                f"`fmt` {fmt!r} does not name {kind} windows uniquely: {sample:%Y-%m-%d %H:%M} "
                f"becomes {text!r}; a key format must spell the {need} (4-digit year)",
                field="fmt",
            )
        problem = key_problem(text)
        if problem is not None:
            raise _fail(name, f"`fmt` {fmt!r} makes keys like {text!r}: {problem}", field="fmt")


# -- static and multi ---------------------------------------------------------------------------


def _static_definition(name: str, table: Mapping[str, Any]) -> StaticPartitions:
    keys = table.get("keys")
    if not isinstance(keys, list | tuple) or not keys:
        raise _fail(
            name, 'a static definition needs `keys`, a non-empty list like ["eu", "us"]',
            field="keys",
        )
    try:
        checked = check_keys(name, keys)
    except ArcodError as err:
        raise ArcodError(DEFINITIONS_ERROR, err.message, {**err.details, "field": "keys"}) from None
    return StaticPartitions(name=name, keys=checked)


def _multi_definition(
    name: str, table: Mapping[str, Any], known: Mapping[str, AnyPartitionsDefinition]
) -> MultiPartitions:
    expected = (
        "`dimensions` must be a table of exactly two dimensions, each the name of another "
        "definition or an inline table, like { date = \"daily\", region = \"region\" }"
    )
    dimensions = table.get("dimensions")
    if not isinstance(dimensions, Mapping) or len(dimensions) != 2:
        got = (
            f"{len(dimensions)} dimensions" if isinstance(dimensions, Mapping)
            else repr(dimensions)
        )
        raise _fail(name, f"{expected}; got {got}", field="dimensions")
    parsed: dict[str, DimensionDefinition] = {}
    for dim_name, spec in sorted(dimensions.items()):
        if not isinstance(dim_name, str) or not _DIMENSION_NAME.match(dim_name):
            raise _fail(
                name,
                f"dimension name {dim_name!r} must be letters, digits or '_' "
                "(it is written `NAME=...` in partition selectors)",
                field="dimensions",
            )
        if isinstance(spec, str):
            if spec not in known:
                raise _fail(
                    name,
                    f"dimension {dim_name!r} names unknown partitions {spec!r}"
                    f"{_nearest(spec, list(known))}; defined: {', '.join(sorted(known)) or 'none'}",
                    field="dimensions",
                    dimension=dim_name,
                )
            defn = known[spec]
        elif isinstance(spec, Mapping):
            if spec.get("kind") == "dynamic":
                raise _fail(
                    name,
                    f"dimension {dim_name!r}: declare a dynamic definition on its own "
                    f"([partitions.{dim_name}] kind = \"dynamic\") and name it here, so "
                    f"`arcod partitions add {dim_name} KEY` can reach it",
                    field="dimensions",
                    dimension=dim_name,
                )
            defn = parse_definition(f"{name}.{dim_name}", spec)
        else:
            raise _fail(name, f"{expected}; dimension {dim_name!r} is {spec!r}", field="dimensions")
        if isinstance(defn, MultiPartitions):
            raise _fail(
                name,
                f"dimension {dim_name!r} is itself multi; a multi definition has exactly two "
                "non-multi dimensions",
                field="dimensions",
                dimension=dim_name,
            )
        parsed[dim_name] = defn
    return MultiPartitions(name=name, dimensions=parsed)
