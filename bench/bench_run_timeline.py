"""Where a task's time goes: attempt timestamps from the database after a no-op run.

Usage: .venv/bin/python bench/bench_run_timeline.py TASKS_AT_A_TIME
"""

import subprocess, sys, sqlite3, statistics
from datetime import datetime
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import daemon, ROOT
N=200
par=int(sys.argv[1])
keys = ", ".join(f'"k{i:06d}"' for i in range(N))
assets = f'[partitions.many]\nkind = "static"\nkeys = [{keys}]\n\n[assets."noop"]\npartitions = "many"\ncommand = ["true"]\n'
with daemon(assets, settings=f"max_tasks_per_run = {par}\n") as (project, sock):
    out = subprocess.run([str(ROOT/".venv/bin/arcod"), "run", "--select", "noop", "--partitions", "all", "--wait", "--json", "--socket", str(sock)], capture_output=True, text=True)
    db = sqlite3.connect(project/".arcod"/"arcod.db")
    rows = db.execute("select a.not_before, a.started_at, a.finished_at, t.started_at from attempts a join tasks t using(run_id, task_id) order by a.not_before").fetchall()
    ev = db.execute("select actor, count(*) from events group by actor").fetchall()
    print(ev)
    f=lambda s: datetime.fromisoformat(s).timestamp()
    proc=[f(r[2])-f(r[1]) for r in rows]
    sched_to_start=[f(r[1])-f(r[0]) for r in rows]
    gaps=[f(rows[i+1][0])-f(rows[i][2]) for i in range(len(rows)-1)]
    total=f(rows[-1][2])-f(rows[0][0])
    print(f"par={par} total {total:.2f}s per task {total/N*1000:.1f}ms")
    print(f"  scheduled->process started (launch tx + spawn + pid tx): median {statistics.median(sched_to_start)*1000:.1f} ms")
    print(f"  process started->finished: median {statistics.median(proc)*1000:.1f} ms")
    print(f"  finished->next scheduled: median {statistics.median(gaps)*1000:.1f} ms")
