"""Shared by the benchmarks: a real daemon on a throwaway project, driven over its socket."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextmanager
def daemon(assets_toml: str, settings: str = "", backend: str = "asyncio"):
    """Yield (project dir, socket path) of a running daemon; stop it afterwards."""
    project = Path(tempfile.mkdtemp(prefix="arcod-bench-"))
    (project / "arcod.toml").write_text(
        'state_dir = ".arcod"\ndefinitions = ["assets.toml"]\n' + settings)
    (project / "assets.toml").write_text(assets_toml)
    sock = project / ".arcod" / "arcod.sock"
    log = (project / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arcod", "serve", "--config", str(project / "arcod.toml"), "--backend", backend],
        stdout=log, stderr=log, cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((project / "daemon.log").read_text())
            time.sleep(0.05)
        yield project, sock
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(project, ignore_errors=True)


def summary(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):7.1f} ms   p99 {p99:7.1f} ms   min {ms[0]:7.1f} ms   (n={len(ms)})"
