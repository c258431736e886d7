"""How long `arcod status` takes end to end, as an operator types it (a new process each time).

Usage: .venv/bin/python bench/bench_cli.py [N]
"""

from __future__ import annotations

import subprocess
import sys
import time

from common import ROOT, daemon, summary

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
ARCOD = str(ROOT / ".venv" / "bin" / "arcod")

with daemon('[assets."a"]\ncommand = ["true"]\n') as (project, sock):
    for label, argv in [
        ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
        ("arcod --help (no socket)", [ARCOD, "--help"]),
        ("arcod status", [ARCOD, "status", "--socket", str(sock)]),
        ("arcod status --json", [ARCOD, "status", "--json", "--socket", str(sock)]),
        ("arcod assets list --json", [ARCOD, "assets", "list", "--json", "--socket", str(sock)]),
    ]:
        samples = []
        for _ in range(N):
            t = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            samples.append(time.perf_counter() - t)
        print(f"{label:<38} {summary(samples)}")
