"""Load: 50 concurrent clients issuing status / list / show requests while a backfill runs.

Nothing is lost (every request gets its reply, every reply is well formed and none is an
error), nobody starves (the slowest request is bounded), and the backfill finishes with every
partition run exactly once. The long version with figures is `bench/bench_load.py` (by hand,
see docs/reliability.md); this one is sized for CI.
"""

from __future__ import annotations

import threading
import time

import pytest

from arcod.control import protocol as p
from arcod.control.client import Client
from tests.e2e.harness import Daemon, asset_toml, write_project
from tests.hardening.conftest import stop
from tests.hardening.wire import rss_kib

pytestmark = pytest.mark.e2e

CLIENTS = 50
REQUESTS_EACH = 12
PARTITIONS = '[partitions.daily]\nkind = "daily"\nstart = "2024-01-01"\nend = "2024-02-10"\n'  # 40 days
ASSETS = asset_toml("p", partitions="daily", command='["true"]') + asset_toml(
    "q", deps=["p"], partitions="daily", command='["true"]')


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fifty_clients_while_a_backfill_runs(tmp_path, backend):
    project = write_project(tmp_path / "proj", ASSETS, partitions=PARTITIONS,
                            settings="max_tasks_per_run = 8\n")
    d = Daemon(project, backend=backend)
    d.start()
    try:
        rss_before = rss_kib(d.proc.pid)
        bf = d.ok("backfill", "create", "--select", "p+", "--partitions", "all", "--chunk-size", "5",
                  "--max-concurrency", "4")
        assert bf["partitions_total"] == 40
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(CLIENTS)

        def client(i: int) -> None:
            mine: list[float] = []
            try:
                with Client(d.socket, timeout=30) as c:
                    start.wait()
                    for n in range(REQUESTS_EACH):
                        kind = (i + n) % 3
                        t0 = time.perf_counter()
                        if kind == 0:
                            result = c.call(p.Status())
                            assert result["pid"] == d.proc.pid
                        elif kind == 1:
                            result = c.call(p.RunsList(backfill_id=bf["backfill_id"], limit=100))
                            assert isinstance(result["runs"], list)
                        else:
                            result = c.call(p.BackfillShow(backfill_id=bf["backfill_id"]))
                            assert result["backfill_id"] == bf["backfill_id"]
                        mine.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                with lock:
                    failures.append(f"client {i}: {exc!r}")
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures[:5]
        assert len(latencies) == CLIENTS * REQUESTS_EACH  # nothing lost
        latencies.sort()
        assert latencies[-1] < 10.0, f"a client waited {latencies[-1]:.1f}s"  # nobody starved

        deadline = time.monotonic() + 120
        while (shown := d.ok("backfill", "show", bf["backfill_id"]))["state"] != "SUCCEEDED":
            assert shown["state"] == "RUNNING" and time.monotonic() < deadline, shown
            time.sleep(0.1)
        runs = d.ok("runs", "list", "--backfill", bf["backfill_id"], "--limit", "100")["runs"]
        assert len(runs) == 8 and all(r["state"] == "SUCCEEDED" for r in runs)
        assert sum(sum(r["counts"].values()) for r in runs) == 80  # 2 assets x 40 partitions, once each
        assert rss_kib(d.proc.pid) - rss_before < 64 * 1024
    finally:
        stop(d)
