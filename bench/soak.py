"""A bounded soak run, started by hand: one daemon, a steady mixed workload, and a sample of the
daemon's resources every 10 s, to show memory and file descriptors stay flat over time.

Usage: .venv/bin/python bench/soak.py [--minutes 15] [--clients 10] [--out soak.jsonl] [--backend asyncio]
       (e.g. in the background: nohup .venv/bin/python bench/soak.py --minutes 60 > soak.log 2>&1 &)

The workload, all through the real socket:
- backfills of 200 hourly partitions x 2 assets (chunks of 20, 2 at a time), one after another;
- every 7th backfill's tasks fail on one partition (the tasks read a flag file), and the failed
  ones are retried with `backfill retry-failed`; runs of single partitions with run keys, some
  repeated (same key: no new run), and reruns from failure;
- `--clients` threads polling status / runs list / runs show / backfill show (~10 req/s each);
- every minute `runs prune --older-than 2m`, so the database and the log directory stay bounded
  and retention runs under load.
Each sample (JSON line): elapsed s, VmRSS KiB, open fds, database + WAL bytes, log dir entries,
runs in the database, requests answered, errors. The summary compares the first and the last
quarter of the run and fits a slope to RSS over the second half.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from pathlib import Path

from common import daemon

from arcod.control import protocol as p
from arcod.control.client import Client

ASSETS = '''
[partitions.hourly]
kind = "hourly"
start = "2020-01-01-00:00"
end = "2024-01-01-00:00"

[assets.raw]
partitions = "hourly"
command = ["sh", "-c", "echo raw $ARCOD_PARTITION_KEY; test ! -e \\"fail/$ARCOD_PARTITION_KEY\\""]

[assets.clean]
partitions = "hourly"
deps = ["raw"]
command = ["sh", "-c", "echo clean $ARCOD_PARTITION_KEY"]
'''


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def hour_key(index: int) -> str:
    from datetime import datetime, timedelta

    return (datetime(2020, 1, 1) + timedelta(hours=index)).strftime("%Y-%m-%d-%H:%M")


class Soak:
    def __init__(self, sock: Path, project: Path, pid: int) -> None:
        self.sock, self.project, self.pid = sock, project, pid
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.errors: list[str] = []
        self.backfills = 0
        self.runs_created = 0
        self.pruned = 0

    def count(self, n: int = 1) -> None:
        with self.lock:
            self.requests += n

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def wait_backfill(self, c: Client, backfill_id: str) -> dict:
        while not self.stop.is_set():
            shown = c.call(p.BackfillShow(backfill_id=backfill_id))
            self.count()
            if shown["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                return shown
            time.sleep(0.5)
        return {}

    def producer(self) -> None:
        rng = random.Random(1)
        (self.project / "fail").mkdir(exist_ok=True)
        with Client(self.sock, timeout=120) as c:
            while not self.stop.is_set():
                try:
                    start = rng.randrange(0, 30_000)
                    failing = self.backfills % 7 == 6
                    flag = self.project / "fail" / hour_key(start + 7)
                    if failing:
                        flag.touch()
                    bf = c.call(p.BackfillCreate(select=["raw+"], partitions=f"{hour_key(start)}..{hour_key(start + 199)}",
                                                 chunk_size=20, max_concurrency=2))
                    self.count()
                    self.backfills += 1
                    shown = self.wait_backfill(c, bf["backfill_id"])
                    if failing:
                        flag.unlink()
                        if shown.get("state") == "FAILED":
                            child = c.call(p.BackfillRetryFailed(backfill_id=bf["backfill_id"]))
                            self.count()
                            self.wait_backfill(c, child["backfill_id"])
                    for i in range(3):  # keyed runs; the second call of a key is a no-op
                        key = f"soak-{self.backfills}-{i % 2}"
                        run = c.call(p.Run(select=["raw"], partition=hour_key(start + i % 2), run_key=key))
                        self.count()
                        self.runs_created += int(run["created"])
                except Exception as exc:  # noqa: BLE001
                    self.error(f"producer: {exc!r}")
                    time.sleep(1)
                self.stop.wait(2)

    def client(self, i: int) -> None:
        rng = random.Random(100 + i)
        with Client(self.sock, timeout=120) as c:
            run_ids: list[str] = []
            while not self.stop.is_set():
                try:
                    kind = rng.randrange(4)
                    if kind == 0:
                        c.call(p.Status())
                    elif kind == 1:
                        run_ids = [r["run_id"] for r in c.call(p.RunsList(limit=20))["runs"]] or run_ids
                    elif kind == 2 and run_ids:
                        try:
                            c.call(p.RunsShow(run_id=rng.choice(run_ids)))
                        except Exception as exc:  # a pruned run is a clean not_found
                            if "no run" not in str(exc):
                                raise
                    else:
                        c.call(p.BackfillList(limit=5))
                    self.count()
                except Exception as exc:  # noqa: BLE001
                    self.error(f"client {i}: {exc!r}")
                self.stop.wait(0.1)

    def pruner(self) -> None:
        with Client(self.sock, timeout=300) as c:
            while not self.stop.wait(60):
                try:
                    result = c.call(p.RunsPrune(older_than_s=120))
                    self.count()
                    with self.lock:
                        self.pruned += result["runs"]
                except Exception as exc:  # noqa: BLE001
                    self.error(f"pruner: {exc!r}")

    def sample(self, started: float) -> dict:
        state = self.project / ".arcod"
        db_bytes = sum(os.path.getsize(state / n) for n in ("arcod.db", "arcod.db-wal") if (state / n).exists())
        logs = state / "logs"
        import sqlite3

        with sqlite3.connect(f"file:{state / 'arcod.db'}?mode=ro", uri=True, timeout=10) as db:
            runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            # Messages committed but not yet applied by their receiver: a receiver that cannot
            # keep up shows here as a count that keeps growing.
            backlog = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            # Pages holding data, as opposed to the file's size (which keeps its peak: SQLite
            # reuses freed pages but does not shrink the file without VACUUM).
            used = (db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]) \
                * db.execute("PRAGMA page_size").fetchone()[0]
        with self.lock:
            return {
                "t": round(time.monotonic() - started, 1),
                "rss_kib": rss_kib(self.pid),
                "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
                "db_bytes": db_bytes,
                "db_used_bytes": used,
                "log_dirs": len(os.listdir(logs)) if logs.exists() else 0,
                "runs": runs,
                "events": events,
                "outbox": backlog,
                "requests": self.requests,
                "backfills": self.backfills,
                "pruned": self.pruned,
                "errors": len(self.errors),
            }


def slope_kib_per_min(points: list[dict]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    xs = [pt["t"] / 60 for pt in points]
    ys = [pt["rss_kib"] for pt in points]
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--out", default="soak.jsonl")
    ap.add_argument("--backend", default="asyncio")
    args = ap.parse_args()
    settings = "max_concurrent_runs = 4\nmax_tasks_per_run = 8\nlog_level = \"warning\"\n"
    with daemon(ASSETS, settings, backend=args.backend) as (project, sock):
        with Client(sock) as c:
            pid = c.call(p.Status())["pid"]
        soak = Soak(sock, project, pid)
        threads = [threading.Thread(target=soak.producer), threading.Thread(target=soak.pruner)]
        threads += [threading.Thread(target=soak.client, args=(i,)) for i in range(args.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        points = []
        with open(args.out, "w") as out:
            try:
                while time.monotonic() - started < args.minutes * 60:
                    point = soak.sample(started)
                    points.append(point)
                    out.write(json.dumps(point) + "\n")
                    out.flush()
                    print(json.dumps(point), flush=True)
                    time.sleep(10)
            finally:
                soak.stop.set()
                for t in threads:
                    t.join()
        quarter = max(1, len(points) // 4)
        first, last = points[:quarter], points[-quarter:]
        avg = lambda pts, k: sum(pt[k] for pt in pts) / len(pts)  # noqa: E731
        print(f"soak of {args.minutes:g} min on {args.backend}: {soak.requests} requests, {soak.backfills} backfills, "
              f"{soak.runs_created} keyed runs, {soak.pruned} runs pruned, {len(soak.errors)} errors")
        print(f"VmRSS MiB: first quarter avg {avg(first, 'rss_kib') / 1024:.1f}, last quarter avg "
              f"{avg(last, 'rss_kib') / 1024:.1f}, max {max(pt['rss_kib'] for pt in points) / 1024:.1f}; "
              f"slope over the second half {slope_kib_per_min(points[len(points) // 2:]):+.1f} KiB/min")
        print(f"open fds: min {min(pt['fds'] for pt in points)}, max {max(pt['fds'] for pt in points)}; "
              f"database + WAL files MiB: max {max(pt['db_bytes'] for pt in points) / 2**20:.1f}, "
              f"last {last[-1]['db_bytes'] / 2**20:.1f}; pages in use MiB: max "
              f"{max(pt['db_used_bytes'] for pt in points) / 2**20:.1f}, last {last[-1]['db_used_bytes'] / 2**20:.1f}; "
              f"runs in the database: max {max(pt['runs'] for pt in points)}, last {last[-1]['runs']}")
        print(f"outbox backlog (messages not yet applied): max {max(pt['outbox'] for pt in points)}, "
              f"last quarter avg {avg(last, 'outbox'):.0f}")
        for e in soak.errors[:10]:
            print("  error:", e)


if __name__ == "__main__":
    main()
