"""Run throughput: N no-op tasks (`true`) through the daemon, against spawning `true` N times.

One run of one static-partitioned asset with N partitions = N tasks. Serial (one task at a
time) isolates the daemon's overhead per task: (daemon wall time - raw spawn time) / N.
Parallel shows throughput with the run's task parallelism.

Usage: .venv/bin/python bench/bench_runs.py [N] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from common import ROOT, daemon

ARCOD = str(ROOT / ".venv" / "bin" / "arcod")

parser = argparse.ArgumentParser()
parser.add_argument("n", type=int, nargs="?", default=500)
parser.add_argument("--backend", default="asyncio")
parser.add_argument("--parallel", type=int, default=4)
args = parser.parse_args()

keys = ", ".join(f'"k{i:06d}"' for i in range(args.n))
assets = f'[partitions.many]\nkind = "static"\nkeys = [{keys}]\n\n[assets."noop"]\npartitions = "many"\ncommand = ["true"]\n'

t = time.perf_counter()
for _ in range(args.n):
    subprocess.run(["true"], check=True)
raw = time.perf_counter() - t
print(f"raw spawn of `true` x{args.n}: {raw:.2f} s ({raw / args.n * 1000:.2f} ms each)")

for parallel in (1, args.parallel):
    with daemon(assets, settings=f"max_tasks_per_run = {parallel}\n", backend=args.backend) as (project, sock):
        t = time.perf_counter()
        out = subprocess.run([ARCOD, "run", "--select", "noop", "--partitions", "all", "--wait", "--json",
                              "--socket", str(sock)], capture_output=True, text=True)
        wall = time.perf_counter() - t
        run = json.loads(out.stdout)
        assert run["state"] == "SUCCEEDED", out.stdout[-500:]
        assert len(run["tasks"]) == args.n
        print(f"daemon [{args.backend}], {parallel} task(s) at a time: {wall:.2f} s, "
              f"{args.n / wall:.1f} tasks/s, overhead {(wall - raw / (1 if parallel == 1 else 1)) / args.n * 1000:.2f} ms/task"
              + (" (vs serial raw spawn)" if parallel == 1 else ""))
