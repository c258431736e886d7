"""The control socket under load: 50 concurrent clients issuing status / list / show requests
while a large backfill runs; latency per request kind (p50/p99), requests/s, and the daemon's
memory (VmRSS from /proc/PID/status) before, during and after.

Usage: .venv/bin/python bench/bench_load.py [--clients 50] [--seconds 30] [--partitions 5000]
                                            [--chunk-size 50] [--backend asyncio|trio] [--idle]
                                            [--think-ms 0]

`--idle` measures the same clients against a daemon with nothing running, for comparison.
Client threads share one Python process (the GIL costs them, not the daemon); on a 2-core
machine the daemon, its task processes and the clients compete for the same cores, so the
figures are an upper bound on what a client waits.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

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
command = ["true"]

[assets.clean]
partitions = "hourly"
deps = ["raw"]
command = ["true"]
'''


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def daemon_pid(sock) -> int:
    with Client(sock) as c:
        return c.call(p.Status())["pid"]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--partitions", type=int, default=5000)
    ap.add_argument("--chunk-size", type=int, default=50)
    ap.add_argument("--backend", default="asyncio")
    ap.add_argument("--idle", action="store_true", help="no backfill: the clients alone")
    ap.add_argument("--think-ms", type=float, default=0.0,
                    help="each client waits this long between requests (0: closed loop, as fast as answered)")
    args = ap.parse_args()

    settings = "max_concurrent_runs = 4\nmax_tasks_per_run = 8\n"
    with daemon(ASSETS, settings, backend=args.backend) as (_project, sock):
        pid = daemon_pid(sock)
        rss = {"start": rss_kib(pid)}
        backfill_id = None
        with Client(sock) as c:
            if not args.idle:
                last = f"2020-01-01-00:00..{_hour_key(args.partitions - 1)}"
                bf = c.call(p.BackfillCreate(select=["raw+"], partitions=last, chunk_size=args.chunk_size,
                                             max_concurrency=4))
                backfill_id = bf["backfill_id"]
                print(f"backfill {backfill_id}: {bf['partitions_total']} partitions x 2 assets, "
                      f"{bf['chunks_total']} chunks of {args.chunk_size}, max_concurrency 4")
                while not c.call(p.RunsList(backfill_id=backfill_id, limit=1))["runs"]:
                    time.sleep(0.05)
            else:
                for _ in range(20):  # something to list and show
                    c.call(p.Run(select=["raw"], partition="2020-01-01-00:00"))
        rss["before_load"] = rss_kib(pid)

        stop = threading.Event()
        samples: dict[str, list[float]] = {"status": [], "runs.list": [], "runs.show": [], "backfill.show": []}
        errors: list[str] = []
        lock = threading.Lock()
        rss_peak = [rss["before_load"]]

        backlog_samples: list[int] = []

        def sampler() -> None:
            import sqlite3

            n = 0
            while not stop.is_set():
                rss_peak[0] = max(rss_peak[0], rss_kib(pid))
                if n % 10 == 0:  # every 5 s: messages committed but not yet applied by their receiver
                    with sqlite3.connect(f"file:{_project / '.arcod' / 'arcod.db'}?mode=ro", uri=True, timeout=10) as db:
                        backlog_samples.append(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                n += 1
                time.sleep(0.5)

        def client(i: int) -> None:
            rng = random.Random(i)
            mine: dict[str, list[float]] = {k: [] for k in samples}
            run_ids: list[str] = []
            with Client(sock, timeout=60) as c:
                while not stop.is_set():
                    kind = rng.choice(list(samples) if backfill_id else ["status", "runs.list", "runs.show"])
                    t0 = time.perf_counter()
                    try:
                        if kind == "status":
                            c.call(p.Status())
                        elif kind == "runs.list":
                            runs = c.call(p.RunsList(limit=50))["runs"]
                            run_ids = [r["run_id"] for r in runs] or run_ids
                        elif kind == "runs.show":
                            if not run_ids:
                                continue
                            c.call(p.RunsShow(run_id=rng.choice(run_ids)))
                        else:
                            c.call(p.BackfillShow(backfill_id=backfill_id))
                    except Exception as exc:  # noqa: BLE001
                        with lock:
                            errors.append(f"{kind}: {exc!r}")
                        continue
                    mine[kind].append(time.perf_counter() - t0)
                    if args.think_ms:
                        stop.wait(args.think_ms / 1000)
            with lock:
                for k, v in mine.items():
                    samples[k].extend(v)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        watcher = threading.Thread(target=sampler)
        started = time.perf_counter()
        watcher.start()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        watcher.join()
        elapsed = time.perf_counter() - started
        rss["after_load"] = rss_kib(pid)
        import sqlite3

        with sqlite3.connect(f"file:{_project / '.arcod' / 'arcod.db'}?mode=ro", uri=True, timeout=10) as db:
            backlog = db.execute("SELECT target, COUNT(*) FROM outbox GROUP BY target").fetchall()
            tasks_done = db.execute(
                "SELECT COUNT(*) FROM tasks t JOIN runs r USING (run_id) WHERE r.backfill_id IS ? AND t.state = 'SUCCEEDED'",
                (backfill_id,)).fetchone()[0]
        progress = ""
        if backfill_id:
            with Client(sock) as c:
                shown = c.call(p.BackfillShow(backfill_id=backfill_id))
            progress = (f"backfill during the load: {shown['state']}, {tasks_done} of {2 * shown['partitions_total']} "
                        f"tasks done ({tasks_done / elapsed:.1f} tasks/s under load)")

        total = sum(len(v) for v in samples.values())
        everything = [x for v in samples.values() for x in v]
        think = f", {args.think_ms:g} ms between requests" if args.think_ms else ", closed loop"
        print(f"{args.clients} clients{think} for {elapsed:.1f}s on {args.backend}: {total} requests, "
              f"{total / elapsed:.0f} requests/s, {len(errors)} errors")
        for kind, values in samples.items():
            if values:
                print(f"  {kind:<14} n={len(values):<6} p50 {statistics.median(values) * 1000:7.1f} ms"
                      f"   p99 {pct(values, 0.99):7.1f} ms   max {max(values) * 1000:7.1f} ms")
        if everything:
            print(f"  {'all':<14} n={total:<6} p50 {statistics.median(everything) * 1000:7.1f} ms"
                  f"   p99 {pct(everything, 0.99):7.1f} ms   max {max(everything) * 1000:7.1f} ms")
        if progress:
            print(progress)
        print("outbox backlog (messages committed, not yet applied), every 5 s:", backlog_samples,
              "at the end:", ", ".join(f"{t} {n}" for t, n in backlog) or "none")
        print(f"daemon VmRSS: start {rss['start'] / 1024:.1f} MiB, before load {rss['before_load'] / 1024:.1f} MiB, "
              f"peak {rss_peak[0] / 1024:.1f} MiB, after {rss['after_load'] / 1024:.1f} MiB")
        for e in errors[:5]:
            print("  error:", e)


def _hour_key(index: int) -> str:
    from datetime import datetime, timedelta

    t = datetime(2020, 1, 1) + timedelta(hours=index)
    return t.strftime("%Y-%m-%d-%H:%M")


if __name__ == "__main__":
    main()
