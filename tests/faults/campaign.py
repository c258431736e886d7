"""The crash campaign: replay the workload while the daemon keeps dying, then check everything.

One round = a fresh project, the workload driven through as many daemon lives as the chaos
plan makes (each life ends in a crash at a failpoint or a SIGKILL from outside, and the next
starts on the same state directory), a clean restart, waiting until nothing is in flight, a
SIGTERM that must end the daemon with exit status 0, then:
- the invariant checker over the database, the accepted commands and the tasks' counter files;
- the final state (`workload.summarize`) compared with the reference round, which ran the
  same workload without faults (and is itself checked against the SPEC's expectations).

Rounds repeat until `cycles` crash/restart cycles happened (and, with coverage on, every
named failpoint crashed the daemon at least once). Usage, by hand:

    .venv/bin/python -m tests.faults.campaign --cycles 200 --seed S [--backend trio] [--keep DIR]

CI runs a bounded campaign through tests/faults/test_campaign.py.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from arcod.control import protocol as p
from tests.faults import invariants
from tests.faults.driver import Chaos, Driver
from tests.faults.workload import Workload, expectation_errors, make_project, summarize

ERROR_LINE = re.compile(rb"failpoint ([\w.]+): injected error")


@dataclass
class RoundResult:
    index: int
    lives: int
    deaths: list[tuple[str, str | None]]
    report: invariants.Report
    summary: dict[str, Any]
    commands: int
    seconds: float
    points: list[str] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # failpoint -> injected errors seen in the log


@dataclass
class CampaignResult:
    seed: str
    backend: str
    rounds: list[RoundResult] = field(default_factory=list)
    reference: RoundResult | None = None
    mismatches: list[str] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cycles(self) -> int:
        return sum(len(r.deaths) for r in self.rounds)

    @property
    def crashes_at(self) -> Counter:
        return Counter(point or "sigkill" for r in self.rounds for _, point in r.deaths)

    @property
    def violations(self) -> list[str]:
        out = [f"reference: {v}" for v in (self.reference.report.violations if self.reference else [])]
        return out + [f"round {r.index}: {v}" for r in self.rounds for v in r.report.violations]

    @property
    def ok(self) -> bool:
        """No violation, no difference from the reference, and every failpoint was reached."""
        return not self.violations and not self.mismatches and not self.unreached

    def text(self) -> str:
        checks = sum(len(r.report.checked) for r in self.rounds)
        points = self.crashes_at
        named = {k: v for k, v in points.items() if k != "sigkill"}
        lines = [
            f"crash campaign seed={self.seed!r} backend={self.backend}: {len(self.rounds)} rounds, "
            f"{self.cycles} crash/restart cycles ({sum(named.values())} at failpoints, {points['sigkill']} SIGKILL), "
            f"{sum(r.lives for r in self.rounds)} daemon lives, {sum(r.commands for r in self.rounds)} CLI commands, "
            f"{self.seconds:.0f} s",
            f"failpoints that crashed the daemon: {len(named)}"
            + (f" (not reached: {', '.join(self.unreached)})" if self.unreached else ""),
        ]
        lines += [f"  {name:<40} {n}" for name, n in sorted(named.items())]
        errors = sum((r.errors for r in self.rounds), Counter())
        lines.append(f"injected errors survived (retried or answered `internal`): {sum(errors.values())} at "
                     f"{len(errors)} points")
        lines.append(f"invariant checks: {checks} ({len(invariants.INVARIANTS)} kinds) over {len(self.rounds)} rounds;"
                     f" violations: {len(self.violations)}; final-state mismatches: {len(self.mismatches)}")
        lines += [f"  VIOLATION {v}" for v in self.violations[:40]]
        lines += [f"  MISMATCH {m}" for m in self.mismatches[:40]]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: {'missing' if k not in b else 'extra'} ({a.get(k, b.get(k))!r})")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: expected {a!r}, got {b!r}"]


def run_round(workdir: Path, index: int, *, chaos: Chaos | None, seed: str, backend: str,
              backfills: bool = True) -> RoundResult:
    started = time.monotonic()
    project = make_project(workdir / f"round{index:03d}")
    drv = Driver(project, backend=backend, chaos=chaos, seed=f"{seed}/round{index}")
    try:
        drv.start()
        work = Workload(drv, backfills=backfills)
        work.run()
        drv.calm()
        work.settle()
        points = drv.call(p.Status())["failpoints"]["points"]
        drv.stop()
        db = project / ".arcod" / "arcod.db"
        report = invariants.check(db, accepted=drv.accepted, counters_dir=project / "counters")
        summary = summarize(db, work.labels())
        errors = Counter(m.decode() for m in ERROR_LINE.findall(drv.daemon.log_path.read_bytes()))
    finally:
        if drv.daemon.proc is not None and drv.daemon.proc.poll() is None:
            drv.daemon.proc.kill()
            drv.daemon.proc.wait()
    return RoundResult(index, drv.lives, drv.deaths, report, summary, drv.commands,
                       time.monotonic() - started, points, errors)


def campaign(cycles: int, seed: str, *, backend: str = "asyncio", workdir: Path, cover: bool = True,
             backfills: bool = True, max_seconds: float | None = None,
             log: Callable[[str], None] = print) -> CampaignResult:
    """Rounds until `cycles` crashes happened (and every point crashed once, if `cover`)."""
    started = time.monotonic()
    result = CampaignResult(seed, backend)
    ref = result.reference = run_round(workdir, 0, chaos=None, seed=seed, backend=backend, backfills=backfills)
    result.mismatches += [f"reference: {e}" for e in expectation_errors(ref.summary)]
    log(f"reference round: {ref.seconds:.1f} s, {len(ref.report.checked)} invariants checked, "
        f"{len(ref.report.violations)} violations, {len(ref.points)} failpoints")
    chaos = Chaos(seed, ref.points, cover=cover)
    index = 0
    while result.cycles < cycles or chaos.covering:
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            log(f"time budget of {max_seconds:.0f} s used up")
            break
        index += 1
        r = run_round(workdir, index, chaos=chaos, seed=seed, backend=backend, backfills=backfills)
        result.rounds.append(r)
        mism = diff(ref.summary, r.summary)
        result.mismatches += [f"round {index}: {m}" for m in mism]
        log(f"round {index}: {len(r.deaths)} crashes ({', '.join(pt or 'sigkill' for _, pt in r.deaths) or '-'}), "
            f"{r.seconds:.1f} s, {len(r.report.violations)} violations, {len(mism)} mismatches; "
            f"total {result.cycles} cycles")
    result.unreached = list(chaos.unreached) + list(chaos.uncovered)
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.campaign", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=200, help="crash/restart cycles to reach (default 200)")
    ap.add_argument("--seed", default="arcod", help="seeds every random choice (default 'arcod')")
    ap.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    ap.add_argument("--no-cover", action="store_true", help="do not crash at every named failpoint first")
    ap.add_argument("--no-backfills", action="store_true", help="runs and reruns only")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--keep", metavar="DIR", help="keep the projects (databases, logs) in DIR")
    args = ap.parse_args(argv)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="arcod-campaign-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = campaign(args.cycles, args.seed, backend=args.backend, workdir=workdir, cover=not args.no_cover,
                          backfills=not args.no_backfills, max_seconds=args.max_seconds,
                          log=lambda line: print(line, flush=True))
        print(result.text(), flush=True)
        return 0 if result.ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
