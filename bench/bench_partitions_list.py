"""`arcod partitions list` on a 100,000-partition definition, end to end through the daemon.

Run: .venv/bin/python bench/bench_partitions_list.py
Starts a real daemon on a temporary project (an hourly definition of 100,000 windows), makes a
few runs (ranges, some partitions failing), then times the CLI (`--json`, best of 5 wall-clock
runs, interpreter start included) for the first page, a MISSING page deep in the definition and
the FAILED filter. Then it adds 100,000 status rows (every partition materialised once, written
straight into the SQLite file as the history indexer would) and times the same commands again:
that is the worst case, since the cost is O(status rows + page), not O(partitions).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arcod.control import protocol as p  # noqa: E402
from arcod.control.client import Client  # noqa: E402
from arcod.core.partitions import parse_definition  # noqa: E402
from tests.e2e.harness import Daemon, asset_toml, write_project  # noqa: E402

N = 100_000
END = datetime(2000, 1, 1) + timedelta(hours=N)
PARTITIONS = f"""
[partitions.hourly]
kind = "hourly"
start = "2000-01-01-00:00"
end = "{END:%Y-%m-%d-%H:%M}"
"""


def timed(d: Daemon, *args: str, repeats: int = 5) -> float:
    best = None
    for _ in range(repeats):
        begin = time.perf_counter()
        r = d.cli(*args)
        elapsed = time.perf_counter() - begin
        assert r.code == 0, r.stderr
        best = elapsed if best is None else min(best, elapsed)
    return best * 1000


def status_during(d: Daemon, *args: str) -> tuple[float, list[float]]:
    """Run one CLI command while another client sends `status` back to back: the command's
    wall clock, and the latencies (ms) of the status requests answered meanwhile (does one
    heavy request starve the others?)."""
    done = threading.Event()
    took: list[float] = []

    def heavy() -> None:
        begin = time.perf_counter()
        r = d.cli(*args, timeout=120)
        took.append(time.perf_counter() - begin)
        assert r.code == 0, r.stderr
        done.set()

    latencies: list[float] = []
    with Client(d.socket, timeout=60) as c:
        worker = threading.Thread(target=heavy)
        worker.start()
        while not done.is_set():
            begin = time.perf_counter()
            c.call(p.Status())
            latencies.append((time.perf_counter() - begin) * 1000)
        worker.join()
    return took[0] * 1000, latencies


def report(d: Daemon, label: str) -> None:
    counts = d.ok("partitions", "list", "h", "--limit", "1")["counts"]
    print(f"\n{label}: counts {counts}")
    for args in (("partitions", "list", "h"),
                 ("partitions", "list", "h", "--state", "MISSING", "--offset", "50000"),
                 ("partitions", "list", "h", "--state", "FAILED")):
        print(f"  {' '.join(args):<55} {timed(d, *args):8.1f} ms")
    print(f"  {'status (baseline: one request, no work)':<55} {timed(d, 'status'):8.1f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = write_project(Path(tmp) / "proj", asset_toml("h", partitions="hourly"), partitions=PARTITIONS)
        d = Daemon(project)
        d.start()
        try:
            assert d.ok("partitions", "list", "h", "--limit", "1")["partitions_total"] == N
            (project / "fail" / "h__2000-01-01-03:00").touch()
            for sel in ("2000-01-01-00:00..2000-01-01-09:00", "2001-06-01-00:00..2001-06-01-04:00",
                        "2010-05-01-00:00..2010-05-01-02:00"):
                d.cli("run", "--select", "h", "--partitions", sel, "--wait", timeout=120)
            report(d, f"{N:,} partitions after 3 runs")
            defn = parse_definition("hourly", {"kind": "hourly", "start": "2000-01-01-00:00", "end": f"{END:%Y-%m-%d-%H:%M}"})
            keys = defn.key_range(0, N)  # the bench's setup may list keys; the daemon never does
            db = sqlite3.connect(project / ".arcod" / "arcod.db", timeout=30)
            now = "2024-01-01T00:00:00.000+00:00"
            with db:
                db.executemany(
                    "INSERT INTO partition_status (asset, partition, last_materialized_run, last_materialized_at,"
                    " last_attempt_run, last_attempt_state, last_attempt_at) VALUES ('h', ?, 'r-bench', ?, 'r-bench',"
                    " 'SUCCEEDED', ?) ON CONFLICT DO NOTHING", [(k, now, now) for k in keys])
            db.close()
            # The first listing after the rows appear places 100,000 keys (the memo is cold).
            took, lat = status_during(d, "partitions", "list", "h")
            lat.sort()
            print(f"\nfirst `partitions list h` over 100,000 rows: {took:.0f} ms; meanwhile {len(lat)} `status` "
                  f"requests, p50 {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms")
            report(d, f"{N:,} partitions, every one with a status row")
        finally:
            d.stop()


if __name__ == "__main__":
    main()
