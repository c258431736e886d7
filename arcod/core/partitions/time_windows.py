"""Time-window partitions: hourly, daily, weekly and monthly windows in an IANA time zone.

This module owns the arithmetic that turns a window's position into its key and back. It never
walks the calendar: a daily index is a difference of date ordinals, a monthly one a difference
of `year * 12 + month`, an hourly one a difference of POSIX seconds divided by 3600. That is
what lets a million-window definition answer `index`, `key` and `size` in microseconds.

Semantics follow Dagster's time-window partitions, with two deliberate choices:

* Date windows (daily, weekly, monthly) run from local midnight to the next local midnight of
  the window's boundary dates, so a daily window on a DST day is 23 or 25 hours long.
* Hourly windows are consecutive 3600-second intervals of absolute time, starting at the first
  top of the local hour at or after `start`. In zones whose offsets only ever change by whole
  hours (nearly all of them) these are exactly the local clock hours; at a fall-back the
  repeated hour's second occurrence gets Dagster's `_POST_DST_TRANSITION` suffix, so every
  key is unique and `key(index(k)) == k` everywhere. In a zone whose offset changes by a
  fraction of an hour (Australia/Lord_Howe's 30-minute DST) the local minute of keys follows
  the offset (`...-00:30` for half the year) instead of producing 30- or 90-minute windows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cached_property
from typing import ClassVar
from zoneinfo import ZoneInfo

import msgspec

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions.protocol import (
    check_index,
    check_span,
    instant,
    needs_as_of,
    not_a_key,
)

DATE_FMT = "%Y-%m-%d"
HOURLY_FMT = "%Y-%m-%d-%H:%M"
POST_DST_SUFFIX = "_POST_DST_TRANSITION"  # Dagster's marker for the repeated hour's 2nd pass
HOUR = 3600
MIN_YEAR = 1000  # four-digit years keep strftime and strptime agreeing on every key
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _past_the_end(defn: TimeWindowPartitions, what: object) -> ArcodError:
    return ArcodError(
        PARTITION_ERROR,
        f"{what} lies beyond the years a calendar can name (9999) in {defn.name!r}",
        {"partitions": defn.name},
    )


class TimeWindowPartitions(
    msgspec.Struct, frozen=True, kw_only=True, dict=True, tag_field="kind"
):
    """Shared behaviour of the four time kinds; construct them via `parse_definition`.

    `start` and `end` are tz-aware instants. `end` is exclusive: the last window is the last
    one that ends at or before it. Without `end` the definition is open-ended and its size is
    the number of windows complete at `as_of`, plus `end_offset` (which may be negative).
    """

    kind: ClassVar[str]

    name: str
    start: datetime
    end: datetime | None = None
    timezone: str = "UTC"
    fmt: str = DATE_FMT
    end_offset: int = 0

    # -- derived state, computed once per instance ----------------------------------------

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _end_count(self) -> int | None:
        if self.end is None:
            return None
        return max(0, self._count_complete(instant(self.end)))

    @property
    def open_ended(self) -> bool:
        return self.end is None

    # -- the protocol ----------------------------------------------------------------------

    def size(self, as_of: datetime | None = None) -> int:
        if self._end_count is not None:
            return self._end_count
        if as_of is None:
            raise needs_as_of(self.name, "its size")
        complete = max(0, self._count_complete(instant(as_of)))
        return max(0, complete + self.end_offset)

    def _limit(self, as_of: datetime | None) -> int | None:
        if self._end_count is not None:
            return self._end_count
        return None if as_of is None else self.size(as_of)

    def key(self, index: int, as_of: datetime | None = None) -> str:
        check_index(self.name, index, self._limit(as_of))
        return self._key_at(index)

    def key_range(self, start: int, stop: int, as_of: datetime | None = None) -> list[str]:
        check_span(self.name, start, stop, self._limit(as_of))
        key_at = self._key_at
        return [key_at(i) for i in range(start, stop)]

    def index(self, key: str, as_of: datetime | None = None) -> int:
        if not isinstance(key, str):
            raise self._malformed(key)
        position = self._index_of(key)
        if position < 0:
            raise not_a_key(
                self.name, self.kind, key,
                f"it is before the first partition {self._key_at(0)!r}",
            )
        limit = self._limit(as_of)
        if limit is not None and position >= limit:
            if limit == 0:
                last = "there are no partitions yet"
            else:
                last = f"the last is {self._key_at(limit - 1)!r}"
            when = "" if as_of is None or self.end is not None else f" as of {as_of.isoformat()}"
            raise not_a_key(
                self.name, self.kind, key,
                f"it is after the last partition{when} ({last})",
            )
        return position

    def window(self, key: str, as_of: datetime | None = None) -> tuple[datetime, datetime]:
        """The window of `key` as tz-aware datetimes in the definition's zone: [start, end)."""
        begin, end = self._bounds_at(self.index(key, as_of))
        return datetime.fromtimestamp(begin, self.tz), datetime.fromtimestamp(end, self.tz)

    def first_key(self) -> str:
        """The key of the first window, whether or not it is complete yet."""
        return self._key_at(0)

    # -- per-cadence arithmetic (subclasses) -------------------------------------------------

    def _count_complete(self, ts: int) -> int:
        """Windows (from the first) whose end is at or before POSIX second `ts`; may be < 0."""
        raise NotImplementedError

    def _key_at(self, index: int) -> str:
        raise NotImplementedError

    def _index_of(self, key: str) -> int:
        """Position of a well-formed key (negative if before the first); raises if malformed."""
        raise NotImplementedError

    def _bounds_at(self, index: int) -> tuple[int, int]:
        raise NotImplementedError

    def _expected_form(self) -> str:
        article = "an" if self.kind == "hourly" else "a"
        return f"expected {article} {self.kind} key like {self._key_at(0)!r} (format {self.fmt!r})"

    def _malformed(self, key: object, why: str = "") -> ArcodError:
        reason = f"{why}; " if why else ""
        return not_a_key(self.name, self.kind, key, reason + self._expected_form(), fmt=self.fmt)


class _DateWindows(TimeWindowPartitions, frozen=True, kw_only=True, dict=True):
    """Windows whose boundaries are local midnights of particular dates."""

    @cached_property
    def first_date(self) -> date:
        """The first aligned date whose local midnight is at or after `start`."""
        start_ts = self.start.timestamp()
        candidate = self._align_up(self.start.astimezone(self.tz).date())
        if self._midnight(candidate) < start_ts:
            candidate = self._align_up(candidate + timedelta(days=1))
        return candidate

    def _midnight(self, day: date) -> int:
        # fold=0: an ambiguous midnight means its first occurrence; a midnight skipped by a
        # spring-forward maps (PEP 495) to the transition instant, the day's first moment.
        return int(datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp())

    def _count_complete(self, ts: int) -> int:
        # The last date whose local midnight has passed by `ts`.
        last = datetime.fromtimestamp(ts, self.tz).date()
        if self._midnight(last) > ts:
            last -= timedelta(days=1)
        return self._windows_through(last)

    def _key_at(self, index: int) -> str:
        try:
            day = self._date_at(index)
        except (OverflowError, ValueError):
            raise _past_the_end(self, f"partition index {index}") from None
        if self.fmt == DATE_FMT:
            return day.isoformat()
        return datetime(day.year, day.month, day.day, tzinfo=self.tz).strftime(self.fmt)

    def _parse_date(self, key: str) -> date:
        try:
            if self.fmt == DATE_FMT and len(key) == 10:
                return date.fromisoformat(key)
            return datetime.strptime(key, self.fmt).date()
        except ValueError:
            raise self._malformed(key) from None

    def _index_of(self, key: str) -> int:
        day = self._parse_date(key)
        position = self._index_of_date(day)
        if position is None:
            raise self._malformed(key, self._alignment())
        if self._key_at(position) != key:
            raise self._malformed(key, "not written in the definition's format")
        return position

    def _bounds_at(self, index: int) -> tuple[int, int]:
        try:
            return self._midnight(self._date_at(index)), self._midnight(self._date_at(index + 1))
        except (OverflowError, ValueError):
            raise _past_the_end(self, f"partition index {index}") from None

    # Per cadence:
    def _align_up(self, day: date) -> date:
        """The first window-start date on or after `day`."""
        raise NotImplementedError

    def _date_at(self, index: int) -> date:
        raise NotImplementedError

    def _index_of_date(self, day: date) -> int | None:
        """Position of the window starting on `day`, or None if no window starts then."""
        raise NotImplementedError

    def _windows_through(self, day: date) -> int:
        """How many windows end on or before local midnight of `day` (may be negative)."""
        raise NotImplementedError

    def _alignment(self) -> str:
        raise NotImplementedError


class DailyPartitions(_DateWindows, frozen=True, kw_only=True, dict=True, tag="daily"):
    """One window per local calendar day."""

    kind: ClassVar[str] = "daily"

    def _align_up(self, day: date) -> date:
        return day

    def _date_at(self, index: int) -> date:
        return date.fromordinal(self.first_date.toordinal() + index)

    def _index_of_date(self, day: date) -> int | None:
        return day.toordinal() - self.first_date.toordinal()

    def _windows_through(self, day: date) -> int:
        return day.toordinal() - self.first_date.toordinal()

    def _alignment(self) -> str:
        return "every day starts a window"


class WeeklyPartitions(_DateWindows, frozen=True, kw_only=True, dict=True, tag="weekly"):
    """Seven-day windows starting on `day_offset` (0 = Sunday, as in Dagster and cron)."""

    kind: ClassVar[str] = "weekly"
    day_offset: int = 0

    @property
    def _weekday(self) -> int:
        return (self.day_offset - 1) % 7  # cron's Sunday=0 to Python's Monday=0

    def _align_up(self, day: date) -> date:
        return day + timedelta(days=(self._weekday - day.weekday()) % 7)

    def _date_at(self, index: int) -> date:
        return date.fromordinal(self.first_date.toordinal() + 7 * index)

    def _index_of_date(self, day: date) -> int | None:
        weeks, rest = divmod(day.toordinal() - self.first_date.toordinal(), 7)
        return None if rest else weeks

    def _windows_through(self, day: date) -> int:
        return (day.toordinal() - self.first_date.toordinal()) // 7

    def _alignment(self) -> str:
        return f"weekly windows start on {WEEKDAYS[self.day_offset]}"


class MonthlyPartitions(_DateWindows, frozen=True, kw_only=True, dict=True, tag="monthly"):
    """Month-long windows starting on day `day_offset` (1..28) of each month."""

    kind: ClassVar[str] = "monthly"
    day_offset: int = 1

    @cached_property
    def _first_month(self) -> int:
        return self.first_date.year * 12 + self.first_date.month - 1

    def _align_up(self, day: date) -> date:
        if day.day <= self.day_offset:
            return day.replace(day=self.day_offset)
        year, month = divmod(day.year * 12 + day.month, 12)  # the next month
        return date(year, month + 1, self.day_offset)

    def _date_at(self, index: int) -> date:
        year, month = divmod(self._first_month + index, 12)
        return date(year, month + 1, self.day_offset)

    def _index_of_date(self, day: date) -> int | None:
        if day.day != self.day_offset:
            return None
        return day.year * 12 + day.month - 1 - self._first_month

    def _windows_through(self, day: date) -> int:
        month = day.year * 12 + day.month - 1 - (1 if day.day < self.day_offset else 0)
        return month - self._first_month

    def _alignment(self) -> str:
        return f"monthly windows start on day {self.day_offset} of the month"


class HourlyPartitions(TimeWindowPartitions, frozen=True, kw_only=True, dict=True, tag="hourly"):
    """Consecutive hours of absolute time; keys are the local wall-clock start of each hour."""

    kind: ClassVar[str] = "hourly"
    fmt: str = HOURLY_FMT

    @cached_property
    def first_ts(self) -> int:
        """The first top of the local hour at or after `start`, in POSIX seconds."""
        local = self.start.astimezone(self.tz)
        past = local.minute * 60 + local.second + local.microsecond / 1e6
        start_ts = self.start.timestamp()
        return int(start_ts) if past == 0 else int(round(start_ts + HOUR - past))

    def _count_complete(self, ts: int) -> int:
        return (ts - self.first_ts) // HOUR

    def _local_at(self, index: int) -> datetime:
        try:
            return datetime.fromtimestamp(self.first_ts + HOUR * index, self.tz)
        except (OverflowError, ValueError, OSError):
            raise _past_the_end(self, f"partition index {index}") from None

    def _render(self, local: datetime) -> str:
        if self.fmt == HOURLY_FMT:  # the C isoformat is several times faster than strftime
            iso = local.isoformat(timespec="minutes")
            text = f"{iso[:10]}-{iso[11:16]}"
        else:
            text = local.strftime(self.fmt)
        # fromtimestamp sets fold=1 exactly on the second pass through a repeated local time.
        return text + POST_DST_SUFFIX if local.fold else text

    def _key_at(self, index: int) -> str:
        return self._render(self._local_at(index))

    def _parse_naive(self, body: str, key: str) -> datetime:
        try:
            if self.fmt == HOURLY_FMT and len(body) == 16 and body[10] == "-" and body[13] == ":":
                # fromisoformat also takes near-miss spellings; the round trip in _index_of
                # refuses anything but the canonical key.
                return datetime.fromisoformat(body).replace(tzinfo=None)
            return datetime.strptime(body, self.fmt).replace(tzinfo=None)
        except ValueError:
            raise self._malformed(key) from None

    def _index_of(self, key: str) -> int:
        if key.endswith(POST_DST_SUFFIX):
            body, fold = key[: -len(POST_DST_SUFFIX)], 1
        else:
            body, fold = key, 0
        local = self._parse_naive(body, key).replace(tzinfo=self.tz, fold=fold)
        try:
            ts = int(local.timestamp())
        except (OverflowError, ValueError, OSError):
            raise self._malformed(key) from None
        hours, rest = divmod(ts - self.first_ts, HOUR)
        if rest:
            nearby = datetime.fromtimestamp(self.first_ts + HOUR * hours, self.tz)
            raise self._malformed(
                key, f"hourly windows start at minute {nearby.minute:02d} of the hour there"
            )
        if self._key_at(hours) != key:
            raise self._malformed(key, self._why_not_canonical(local, fold))
        return hours

    def _why_not_canonical(self, local: datetime, fold: int) -> str:
        other = local.replace(fold=1 - fold)
        if local.utcoffset() == other.utcoffset():
            if fold:
                return (
                    f"{POST_DST_SUFFIX!r} only marks the second pass through a local hour "
                    "repeated when clocks go back"
                )
            return "not written in the definition's format"
        round_trip = datetime.fromtimestamp(local.timestamp(), self.tz).replace(tzinfo=None)
        if round_trip != local.replace(tzinfo=None, fold=0):
            return f"that local time does not exist in {self.timezone} (clocks skip it)"
        return "not written in the definition's format"

    def _bounds_at(self, index: int) -> tuple[int, int]:
        begin = self.first_ts + HOUR * index
        return begin, begin + HOUR

    def _expected_form(self) -> str:
        text = super()._expected_form()
        if self.timezone != "UTC":
            text += (
                f"; the second pass through an hour repeated when clocks go back ends in "
                f"{POST_DST_SUFFIX!r}"
            )
        return text


TIME_KINDS: dict[str, type[TimeWindowPartitions]] = {
    "hourly": HourlyPartitions,
    "daily": DailyPartitions,
    "weekly": WeeklyPartitions,
    "monthly": MonthlyPartitions,
}
