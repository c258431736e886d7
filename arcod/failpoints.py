"""Failpoints: named places where a test makes the daemon crash, fail, stall or repeat itself.

SPEC §9 promises faults on purpose; this is the switchboard. The daemon calls `hit(name)` at
every actor boundary (`actor.<actor>.before_persist|after_persist|before_emit|after_emit`),
in the executor around a process's start and end, and in the control server around an answer;
the actor runtime asks `should_duplicate("actor.<actor>.deliver")` before each delivery.

Configuration is a string, from `failpoints` in arcod.toml and the `ARCOD_FAILPOINTS`
environment variable (appended, so the environment wins): ``name=actions;name=actions``.
Names may hold `*`, which matches any run of characters (dots included); when several entries
match a point, the last one wins. Actions follow TiKV's fail-rs:

    actions := term ("->" term)*
    term    := [P "%"] [N "*"] action
    action  := off | crash | error | delay(MS) | duplicate

Each hit walks the terms in order and takes the first that fires: a term whose `N*` count is
used up is skipped, a term with `P%` fires with probability P (when it does not, the walk goes
on to the next term), and a firing term uses one of its count. No term fires: nothing happens.
So `3*off->crash` passes three times and then crashes, `50%crash` crashes half the hits,
`1*delay(200)` stalls the first hit by 200 ms only. Counters and random draws belong to each
concrete point (a pattern gives every point it matches its own), and each point draws from
`random.Random(f"{seed}/{name}")`: the same seed makes the same decisions at the same hit
numbers in any process (never `hash()`, which is salted per process).

* `crash` ends the process at once with SIGKILL, like `kill -9`: no cleanup, no flush (one
  line goes to stderr first, written directly, so a log says which point it was).
* `error` raises `FailpointError` where the point is: an unexpected exception in that actor.
* `delay(MS)` returns an awaitable the caller awaits: a stall, not a blocked event loop.
* `duplicate` only at `*.deliver` points, where it is the only action besides `off`: the
  message is delivered twice. Entries whose actions do not fit a point do not apply to it.

When nothing is configured, `hit` is one attribute test and a return (measured in
`bench/bench_failpoints.py`), so the points cost nothing in production.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
from collections.abc import Awaitable, Iterable

import msgspec

FAILPOINTS_ENV = "ARCOD_FAILPOINTS"
SEED_ENV = "ARCOD_FAILPOINTS_SEED"
DEFAULT_SEED = "arcod"

ACTIONS = ("off", "crash", "error", "delay", "duplicate")
ACTOR_POINTS = ("before_persist", "after_persist", "before_emit", "after_emit")
EXECUTOR_POINTS = (
    "executor.before_start",          # about to spawn the attempt's process
    "executor.after_spawn",           # the process exists, its pid is not recorded yet
    "executor.after_start",           # pid recorded, attempt RUNNING
    "executor.before_finish_report",  # the process ended, its outcome not yet sent
    "executor.after_finish_report",   # AttemptFinished is in the dispatcher's outbox
)
CONTROL_POINTS = ("control.before_answer", "control.after_answer")

_NAME = re.compile(r"[A-Za-z0-9_.*-]+")
_TERM = re.compile(r"(?:(?P<pct>\d+(?:\.\d+)?)%)?(?:(?P<count>\d+)\*)?(?P<action>[a-z]+)(?:\((?P<arg>[^)]*)\))?")


class FailpointError(RuntimeError):
    """The exception an `error` failpoint raises: an unexpected failure, on purpose."""


class FailpointSpecError(ValueError):
    """A failpoint configuration that cannot be parsed or names no failpoint."""


class Term(msgspec.Struct, frozen=True):
    action: str
    pct: float | None = None  # 0 < pct <= 100; None = always
    count: int | None = None  # how many times it may fire; None = unlimited
    delay_ms: int | None = None


class Entry(msgspec.Struct, frozen=True):
    pattern: str
    text: str  # the actions as written, for status
    terms: tuple[Term, ...]

    def matches(self, name: str) -> bool:
        return _pattern_regex(self.pattern).fullmatch(name) is not None

    def fits(self, name: str) -> bool:
        """Whether these actions make sense at point `name` (duplicate only where delivering)."""
        actions = {t.action for t in self.terms} - {"off"}
        if is_delivery_point(name):
            return actions <= {"duplicate"}
        return "duplicate" not in actions


def is_delivery_point(name: str) -> bool:
    return name.endswith(".deliver")


def point_names(actor_names: Iterable[str]) -> list[str]:
    """Every failpoint a daemon with these actors has, in a stable order."""
    names = []
    for actor in actor_names:
        names += [f"actor.{actor}.{p}" for p in ACTOR_POINTS]
        names.append(f"actor.{actor}.deliver")
    return names + list(EXECUTOR_POINTS) + list(CONTROL_POINTS)


def parse(spec: str) -> tuple[Entry, ...]:
    """Parse `name=actions;name=actions` (newlines work as separators too)."""
    entries = []
    for raw in re.split(r"[;\n]", spec):
        item = raw.strip()
        if not item:
            continue
        name, sep, actions = item.partition("=")
        name, actions = name.strip(), actions.strip()
        if not sep or not _NAME.fullmatch(name):
            raise FailpointSpecError(
                f"failpoint entry {item!r} is not NAME=ACTIONS (NAME of letters, digits, '_', '.', '-', '*'), "
                "e.g. actor.dispatcher.after_persist=1*crash")
        entries.append(Entry(pattern=name, text=actions, terms=parse_actions(actions, name)))
    return tuple(entries)


def parse_actions(text: str, name: str = "?") -> tuple[Term, ...]:
    terms = []
    for raw in text.split("->"):
        m = _TERM.fullmatch(raw.strip())
        if m is None:
            raise FailpointSpecError(
                f"failpoint {name}: cannot read {raw.strip()!r}; a term is [P%][N*]ACTION, ACTION one of "
                f"{', '.join(ACTIONS)} (delay takes milliseconds: delay(200)), e.g. 3*off->crash")
        action, arg = m["action"], m["arg"]
        if action not in ACTIONS:
            raise FailpointSpecError(f"failpoint {name}: unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        delay_ms = None
        if action == "delay":
            if arg is None or not arg.strip().isdigit():
                raise FailpointSpecError(f"failpoint {name}: delay needs whole milliseconds, e.g. delay(200)")
            delay_ms = int(arg)
        elif arg is not None:
            raise FailpointSpecError(f"failpoint {name}: {action} takes no argument")
        pct = None
        if m["pct"] is not None:
            pct = float(m["pct"])
            if not 0 < pct <= 100:
                raise FailpointSpecError(f"failpoint {name}: a probability is above 0% and at most 100%, not {pct}%")
        count = None
        if m["count"] is not None:
            count = int(m["count"])
            if count < 1:
                raise FailpointSpecError(f"failpoint {name}: a count is at least 1 (N* fires N times)")
        terms.append(Term(action=action, pct=pct, count=count, delay_ms=delay_ms))
    return tuple(terms)


_regex_cache: dict[str, re.Pattern[str]] = {}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = _regex_cache.get(pattern)
    if regex is None:
        regex = _regex_cache[pattern] = re.compile(".*".join(re.escape(part) for part in pattern.split("*")))
    return regex


class _Point:
    """One concrete failpoint's configuration and its own counters and random stream."""

    __slots__ = ("entry", "remaining", "rng", "hits", "fired")

    def __init__(self, entry: Entry, seed: str, name: str) -> None:
        self.entry = entry
        self.remaining = [t.count for t in entry.terms]
        self.rng = random.Random(f"{seed}/{name}")  # str seeds hash with SHA-512: stable everywhere
        self.hits = 0
        self.fired = 0

    def decide(self) -> Term | None:
        self.hits += 1
        for i, term in enumerate(self.entry.terms):
            left = self.remaining[i]
            if left == 0:
                continue
            if term.pct is not None and term.pct < 100 and self.rng.random() * 100 >= term.pct:
                continue
            if left is not None:
                self.remaining[i] = left - 1
            if term.action == "off":
                return None
            self.fired += 1
            return term
        return None


class Failpoints:
    """The daemon's failpoint registry (see the module docstring for the syntax)."""

    def __init__(self, spec: str = "", seed: str = DEFAULT_SEED) -> None:
        self.entries = parse(spec)
        self.seed = seed
        self.armed = bool(self.entries)  # the fast path: False means every point passes
        self._points: dict[str, _Point | None] = {}

    @classmethod
    def from_config(cls, configured: str = "", configured_seed: str = "",
                    environ: dict[str, str] | None = None) -> Failpoints:
        """Config first, then `ARCOD_FAILPOINTS` (wins per point); seed from the env, else config."""
        env = os.environ if environ is None else environ
        spec = ";".join(s for s in (configured, env.get(FAILPOINTS_ENV, "")) if s.strip())
        return cls(spec, env.get(SEED_ENV) or configured_seed or DEFAULT_SEED)

    def check_names(self, known: Iterable[str]) -> None:
        """Refuse an entry that fits no known point: a typo would otherwise never fire."""
        known = list(known)
        for entry in self.entries:
            if not any(entry.matches(n) and entry.fits(n) for n in known):
                raise FailpointSpecError(
                    f"failpoint {entry.pattern}={entry.text} applies to no failpoint of this daemon "
                    f"(duplicate goes with *.deliver points only); the points are: {', '.join(known)}")

    def hit(self, name: str) -> Awaitable[None] | None:
        """Pass point `name`: maybe crash, raise, or return an awaitable delay."""
        if not self.armed:
            return None
        point = self._point(name)
        if point is None:
            return None
        term = point.decide()
        if term is None:
            return None
        if term.action == "crash":
            crash(name)
        if term.action == "error":
            raise FailpointError(f"failpoint {name}: injected error")
        if term.action == "delay":
            import anyio

            return anyio.sleep(term.delay_ms / 1000)  # type: ignore[operator]
        return None

    def should_duplicate(self, name: str) -> bool:
        """Whether this delivery at `name` (an `actor.<actor>.deliver` point) goes out twice."""
        if not self.armed:
            return False
        point = self._point(name)
        if point is None:
            return False
        term = point.decide()
        return term is not None and term.action == "duplicate"

    def active(self) -> dict:
        """What is configured and what it did so far, for `arcod status`."""
        out: dict[str, dict] = {}
        for entry in self.entries:
            out[entry.pattern] = {"actions": entry.text, "hits": 0, "fired": 0}
        for point in self._points.values():
            if point is not None:
                row = out[point.entry.pattern]
                row["hits"] += point.hits
                row["fired"] += point.fired
        return out

    def _point(self, name: str) -> _Point | None:
        try:
            return self._points[name]
        except KeyError:
            pass
        entry = None
        for candidate in self.entries:  # the last matching entry wins
            if candidate.matches(name) and candidate.fits(name):
                entry = candidate
        point = self._points[name] = None if entry is None else _Point(entry, self.seed, name)
        return point


def crash(name: str) -> None:
    """Die now, the way `kill -9` kills: no finally blocks, no flushing, no atexit."""
    try:
        os.write(sys.stderr.fileno(), f'{{"event": "failpoint crash", "failpoint": "{name}"}}\n'.encode())
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signal.SIGKILL)
    while True:  # pragma: no cover - SIGKILL to ourselves does not return
        time.sleep(1)
