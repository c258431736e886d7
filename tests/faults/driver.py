"""A real daemon that dies on schedule, and an operator that carries on regardless.

`Chaos` decides, from a seed, how each life of the daemon ends: crashing at one named
failpoint after a few passes (until every point has crashed it at least once), crashing at
random points with small probabilities (with random stalls and injected errors mixed in), or
a SIGKILL from outside after a random time. `Driver` runs the daemon (`arcod serve`, a real
subprocess, on a real project) through those lives: whenever it finds the daemon dead it
restarts it on the same state directory, as an operator's supervisor would.

Commands go through the real CLI. A command that got no answer (exit status 3: the daemon
died or was not up yet; or an `internal` error injected around the answer) is repeated
as it was: with the same run_key, request id or derived rerun key, which is what makes
repeating it safe. Every command answered "ok" is recorded for the invariant checker.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcod.control import protocol as p
from arcod.control.client import Client, DaemonUnreachable, RequestRefused
from tests.e2e.harness import Daemon, Result

CRASH_LINE = re.compile(rb'"event": "failpoint crash", "failpoint": "([^"]+)"')
# Points a workload reaches; `.deliver` points take only `duplicate` (duplicate mode covers them).
RANDOM_CRASH_PCT = (2, 5, 10)


@dataclass
class Life:
    failpoints: str = ""
    kill_after: float | None = None
    label: str = "clean"
    target: str | None = None  # the point this life is meant to crash at (coverage lives)


@dataclass
class Chaos:
    """The seeded plan of how each daemon life ends."""

    seed: str
    points: list[str]
    cover: bool = True  # crash at every point at least once before going random
    kill_share: float = 0.35  # of random lives: SIGKILL from outside
    max_tries_per_point: int = 4
    rng: random.Random = field(init=False)
    uncovered: list[str] = field(init=False)
    tries: Counter = field(default_factory=Counter)
    crashes_at: Counter = field(default_factory=Counter)  # point (or "sigkill") -> deaths caused
    unreached: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"chaos/{self.seed}")
        self.uncovered = [n for n in self.points if not n.endswith(".deliver")] if self.cover else []

    def next_life(self) -> Life:
        while self.uncovered and self.tries[self.uncovered[0]] >= self.max_tries_per_point:
            self.unreached.append(self.uncovered.pop(0))
        if self.uncovered:
            point = self.uncovered[0]
            self.tries[point] += 1
            passes = self.rng.randint(0, 3)
            spec = f"{point}={passes}*off->1*crash" if passes else f"{point}=1*crash"
            return Life(spec, None, f"cover {point}", target=point)
        if self.rng.random() < self.kill_share:
            return Life("", round(self.rng.uniform(0.15, 2.5), 3), "sigkill")
        crashable = [n for n in self.points if not n.endswith(".deliver")]
        entries = []
        if self.rng.random() < 0.5:  # stalls shuffle the interleavings
            entries.append(f"actor.*.before_emit={self.rng.choice((5, 10, 20))}%delay({self.rng.choice((5, 20, 50))})")
        if self.rng.random() < 0.5:  # errors the runtime must retry (actor and answer points only)
            soft = [n for n in crashable if n.startswith(("actor.", "control."))]
            entries += [f"{point}={self.rng.choice((5, 10, 20))}%error" for point in self.rng.sample(soft, 2)]
        for point in self.rng.sample(crashable, 3):
            entries.append(f"{point}={self.rng.choice(RANDOM_CRASH_PCT)}%crash")
        return Life(";".join(entries), None, "random")

    def died(self, life: Life, point: str | None) -> None:
        self.crashes_at[point or "sigkill"] += 1
        if point is not None and point in self.uncovered:
            self.uncovered.remove(point)

    @property
    def covering(self) -> bool:
        return bool(self.uncovered)


class WorkloadError(AssertionError):
    """The daemon answered something the workload does not allow."""


class Driver:
    """Drives one project's daemon through its lives; the CLI and polls survive its deaths."""

    def __init__(self, project: Path, *, backend: str = "asyncio", chaos: Chaos | None = None,
                 seed: str = "0", command_timeout: float = 90.0) -> None:
        self.daemon = Daemon(project, backend=backend)
        self.chaos = chaos
        self.seed = seed
        self.command_timeout = command_timeout
        self.life: Life = Life()
        self.lives = 0
        self.deaths: list[tuple[str, str | None]] = []  # (life label, failpoint or None for SIGKILL)
        self.accepted: list[dict[str, Any]] = []
        self.commands = 0
        self._log_offset = 0
        self._timer: threading.Timer | None = None

    # ── lives ──────────────────────────────────────────────────────────────

    def start(self) -> None:
        while True:
            self.life = self.chaos.next_life() if self.chaos is not None else Life()
            self.lives += 1
            self.daemon.env = {"ARCOD_FAILPOINTS": self.life.failpoints,
                               "ARCOD_FAILPOINTS_SEED": f"{self.seed}/life{self.lives}"}
            self._log_offset = self.daemon.log_path.stat().st_size if self.daemon.log_path.exists() else 0
            try:
                self.daemon.start(timeout=60)
            except RuntimeError:
                if self.daemon.proc is not None and self.daemon.proc.poll() == -signal.SIGKILL:
                    self._record_death()  # crashed while starting (a control point on `status`, say)
                    continue
                raise
            if self.life.kill_after is not None:
                proc = self.daemon.proc
                self._timer = threading.Timer(self.life.kill_after, _kill, (proc,))
                self._timer.daemon = True
                self._timer.start()
            return

    def alive(self) -> bool:
        return self.daemon.proc is not None and self.daemon.proc.poll() is None

    def ensure_up(self) -> None:
        if self.alive():
            return
        if self.daemon.proc is not None:
            code = self.daemon.proc.returncode
            if code != -signal.SIGKILL:
                raise WorkloadError(f"the daemon exited with {code}, not by a crash:\n{self.daemon.daemon_log_tail()}")
            self._record_death()
        self.start()

    def _record_death(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self.daemon.log_path.open("rb") as f:
            f.seek(self._log_offset)
            found = CRASH_LINE.findall(f.read())
        point = found[-1].decode() if found else None
        self.deaths.append((self.life.label, point))
        if self.chaos is not None:
            self.chaos.died(self.life, point)

    def stop(self) -> int | None:
        """SIGTERM: the graceful drain must end the daemon with exit status 0."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.alive():
            return None
        code = self.daemon.stop(timeout=60)
        if code == -signal.SIGKILL and self._crashed_this_life():
            # A failpoint crash raced the SIGTERM: the last command's answer was its trigger
            # (control.after_answer), and the daemon was dying when we looked. A death (the
            # caller records it), not a failed drain.
            return code
        if code != 0:
            raise WorkloadError(f"SIGTERM ended the daemon with {code}, not 0:\n{self.daemon.daemon_log_tail()}")
        return code

    def _crashed_this_life(self) -> bool:
        with self.daemon.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return bool(CRASH_LINE.findall(f.read()))

    def calm(self) -> None:
        """Stop crashing: the rest of this daemon's life is clean (for the final checks)."""
        self.chaos = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.alive() and self.life.failpoints:
            self.stop()  # and restart clean, without failpoints
        if not self.alive():
            if self.daemon.proc is not None and self.daemon.proc.returncode == -signal.SIGKILL:
                self._record_death()
            self.daemon.proc = None
            self.start()

    # ── operator ───────────────────────────────────────────────────────────

    def cli(self, *args: str, accept: str | None = None, allow: tuple[str, ...] = ()) -> Result:
        """Run `arcod ARGS --json` until it gets an answer; a refusal must be one of `allow`."""
        deadline = time.monotonic() + self.command_timeout
        while True:
            if time.monotonic() > deadline:
                raise WorkloadError(f"arcod {' '.join(args)} got no answer in {self.command_timeout}s\n"
                                    f"{self.daemon.daemon_log_tail()}")
            self.ensure_up()
            self.commands += 1
            r = self.daemon.cli(*args)
            if r.code == 3:
                time.sleep(0.02)
                continue
            if r.code == 1:
                err = r.json.get("error") if r.stdout.strip().startswith("{") else None
                code = err["code"] if err else None
                if code == "internal":  # an injected error around the answer: ask again
                    continue
                if code in allow:
                    return r
                raise WorkloadError(f"arcod {' '.join(args)} refused: {r.stdout or r.stderr}")
            if r.code != 0:
                raise WorkloadError(f"arcod {' '.join(args)} -> {r.code}: {r.stdout} {r.stderr}")
            if accept is not None:
                self.accepted.append({"cmd": accept, "args": list(args), "result": r.json})
            return r

    def call(self, request: p.Request) -> Any:
        """One read over the socket (polling); retried across deaths like a command."""
        deadline = time.monotonic() + self.command_timeout
        while time.monotonic() < deadline:
            self.ensure_up()
            try:
                with Client(self.daemon.socket, timeout=20) as client:
                    return client.call(request)
            except DaemonUnreachable:
                time.sleep(0.02)
            except RequestRefused as exc:
                if exc.error.code != "internal":
                    raise
        raise WorkloadError(f"{request} got no answer in {self.command_timeout}s\n{self.daemon.daemon_log_tail()}")

    def wait(self, what: str, predicate, request: p.Request, timeout: float = 120.0) -> Any:
        """Poll `request` until `predicate(result)`; deaths on the way are survived."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.call(request)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise WorkloadError(f"timed out waiting for {what}: {result}\n{self.daemon.daemon_log_tail()}")
            time.sleep(0.05)


def _kill(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
