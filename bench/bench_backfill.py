"""Backfills at size, through a real daemon over its socket (requests timed in-process, so the
figures are the daemon's, not a CLI process start-up).

Usage: .venv/bin/python bench/bench_backfill.py [create|show|e2e|all] [E2E_PARTITIONS [CHUNK_SIZE]]

- create: `backfill create --dry-run` and `backfill create` of 1,000,000 hourly partitions,
  and the bytes each backfill stores (a 10-partition backfill for comparison).
- show: `backfill show` (and a page of chunks / partitions) on a 1,000,000-partition
  backfill that is really mid-way: 500,000 partitions are seeded as materialised in the
  history table (as earlier runs would have left them) and the backfill runs with
  `--reprocess missing`, so the controller plans and skips 5,000 chunks of 100 before it
  reaches work; it is then paused and timed.
- e2e: a 10,000-partition backfill of an asset whose command is `true`, end to end
  (create -> SUCCEEDED), against spawning `true` the same number of times.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, daemon, summary

from arcod.control import protocol as p
from arcod.control.client import Client

HOURLY_1M = '''
[partitions.hourly]
kind = "hourly"
start = "1910-01-01-00:00"
end = "2024-01-29-16:00"      # exactly 1,000,000 hours

[partitions.daily]
kind = "daily"
start = "1990-01-01"
end = "2017-05-19"            # exactly 10,000 days

[assets.big]
partitions = "hourly"
command = ["true"]

[assets.noop]
partitions = "daily"
command = ["true"]
'''


def timed(client: Client, request: p.Request) -> tuple[float, object]:
    t = time.perf_counter()
    result = client.call(request)
    return time.perf_counter() - t, result


def stored_bytes(db: Path, backfill_id: str) -> int:
    """Bytes of every value stored for a backfill: its row, its transitions, its listed rows."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(backfills)")]
        row = conn.execute(f"SELECT {', '.join(f'length({c})' for c in cols)} FROM backfills WHERE backfill_id = ?",
                           (backfill_id,)).fetchone()
        trans = conn.execute("SELECT COALESCE(SUM(length(reason) + length(at) + length(to_state)), 0)"
                             " FROM backfill_transitions WHERE backfill_id = ?", (backfill_id,)).fetchone()[0]
        targets = conn.execute("SELECT COUNT(*) FROM backfill_targets WHERE backfill_id = ?", (backfill_id,)).fetchone()[0]
    return sum(v or 0 for v in row) + trans + targets


def bench_create(n: int = 20) -> None:
    print("== create and dry-run of 1,000,000 hourly partitions (over the socket) ==")
    with daemon(HOURLY_1M, "max_concurrent_runs = 4\n") as (project, sock), Client(sock) as client:
        create = dict(select=["big"], partitions="all", chunk_size=10, max_concurrency=1)
        dry = [timed(client, p.BackfillCreate(**create, dry_run=True)) for _ in range(n)]
        print(f"dry-run  {summary([t for t, _ in dry])}  partitions_total={dry[0][1]['partitions_total']:,}"
              f" chunks_total={dry[0][1]['chunks_total']:,}")
        dry_missing = [timed(client, p.BackfillCreate(**create, reprocess="missing", dry_run=True)) for _ in range(n)]
        print(f"dry-run --reprocess missing (no history)  {summary([t for t, _ in dry_missing])}")
        real = []
        for _ in range(n):
            t, bf = timed(client, p.BackfillCreate(**create))
            real.append(t)
            client.call(p.BackfillTransition(backfill_id=bf["backfill_id"], action="cancel"))
            while client.call(p.BackfillShow(backfill_id=bf["backfill_id"]))["state"] != "CANCELED":
                time.sleep(0.05)  # time each create on a quiet daemon
        print(f"create   {summary(real)}")
        small = client.call(p.BackfillCreate(select=["big"], partitions="2000-01-01-00:00..2000-01-01-09:00",
                                             chunk_size=10, max_concurrency=1))
        client.call(p.BackfillTransition(backfill_id=small["backfill_id"], action="cancel"))
        db = project / ".arcod" / "arcod.db"
        print(f"stored bytes: 1,000,000 partitions {stored_bytes(db, bf['backfill_id'])} B, "
              f"10 partitions {stored_bytes(db, small['backfill_id'])} B")


def bench_show(n: int = 50) -> None:
    print("== backfill show on a 1,000,000-partition backfill mid-way ==")
    from arcod.core.partitions import parse_definition

    defn = parse_definition("hourly", {"kind": "hourly", "start": "1910-01-01-00:00", "end": "2024-01-29-16:00"})
    half = 500_000
    with daemon(HOURLY_1M, "max_concurrent_runs = 4\n") as (project, sock), Client(sock) as client:
        db = project / ".arcod" / "arcod.db"
        t = time.perf_counter()
        with sqlite3.connect(db, timeout=30) as conn:
            conn.executemany(
                "INSERT INTO partition_status (asset, partition, last_materialized_run, last_materialized_at,"
                " last_attempt_run, last_attempt_state, last_attempt_at) VALUES ('big', ?, 'seed', '2000-01-01', 'seed',"
                " 'SUCCEEDED', '2000-01-01')", ((k,) for k in defn.key_range(0, half)))
        print(f"seeded {half:,} materialised partitions in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        bf = client.call(p.BackfillCreate(select=["big"], partitions="all", chunk_size=100, max_concurrency=2,
                                          reprocess="missing"))
        bid = bf["backfill_id"]
        while True:
            shown = client.call(p.BackfillShow(backfill_id=bid))
            if shown["counts"]["partitions"]["SKIPPED"] >= half:
                break
            time.sleep(0.2)
        client.call(p.BackfillTransition(backfill_id=bid, action="pause"))
        print(f"planned and skipped {half:,} partitions ({half // 100:,} chunks) in {time.perf_counter() - t:.1f}s")
        samples = [timed(client, p.BackfillShow(backfill_id=bid)) for _ in range(n)]
        shown = samples[-1][1]
        print(f"show     {summary([s for s, _ in samples])}  state={shown['state']}"
              f" partitions={shown['counts']['partitions']} chunks={shown['counts']['chunks']}")
        for label, req in [
            ("chunks (first page, 100)", p.BackfillChunks(backfill_id=bid)),
            ("chunks (page at 5,000)", p.BackfillChunks(backfill_id=bid, offset=4_950)),
            ("chunks --state PENDING", p.BackfillChunks(backfill_id=bid, state="PENDING")),
            ("partitions (page at 500,000)", p.BackfillPartitions(backfill_id=bid, offset=half - 50)),
            ("partitions --state PENDING", p.BackfillPartitions(backfill_id=bid, state="PENDING")),
            ("list", p.BackfillList()),
        ]:
            print(f"{label:<30} {summary([timed(client, req)[0] for _ in range(n)])}")
        client.call(p.BackfillTransition(backfill_id=bid, action="cancel"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_e2e(partitions: int = 10_000, chunk_size: int = 10) -> None:
    print(f"== {partitions:,}-partition backfill of a no-op asset, end to end (chunk size {chunk_size}) ==")
    t = time.perf_counter()
    for _ in range(min(partitions, 2_000)):
        subprocess.run(["true"], check=True)
    spawn = (time.perf_counter() - t) / min(partitions, 2_000)
    print(f"spawning `true` from Python, one after another: {spawn * 1000:.2f} ms each")
    last = f"1990-01-01..{'2017-05-18' if partitions == 10_000 else None}"
    if partitions != 10_000:
        from arcod.core.partitions import parse_definition

        d = parse_definition("daily", {"kind": "daily", "start": "1990-01-01", "end": "2017-05-19"})
        last = f"1990-01-01..{d.key(partitions - 1)}"
    settings = "max_concurrent_runs = 4\nmax_tasks_per_run = 4\n"
    with daemon(HOURLY_1M, settings) as (project, sock), Client(sock) as client:
        pid = client.call(p.Status())["pid"]
        cpu0 = cpu_seconds(pid)
        t = time.perf_counter()
        bf = client.call(p.BackfillCreate(select=["noop"], partitions=last, chunk_size=chunk_size, max_concurrency=4))
        while True:
            shown = client.call(p.BackfillShow(backfill_id=bf["backfill_id"]))
            if shown["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                break
            time.sleep(0.5)
        wall = time.perf_counter() - t
        cpu = cpu_seconds(pid) - cpu0
        assert shown["state"] == "SUCCEEDED", shown
        print(f"{partitions:,} partitions in {wall:.1f}s: {partitions / wall:.1f} partitions/s, "
              f"{wall / partitions * 1000:.2f} ms wall per task (4 runs x 4 tasks at once)")
        print(f"daemon CPU: {cpu:.1f}s total, {cpu / partitions * 1000:.2f} ms per task "
              f"(spawning `true` alone: {spawn * 1000:.2f} ms)")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("create", "all"):
        bench_create()
    if which in ("show", "all"):
        bench_show()
    if which in ("e2e", "all"):
        bench_e2e(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000, int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus; root {ROOT})")
