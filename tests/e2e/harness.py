"""Drive the real daemon: a temporary project, `arcod serve` as a subprocess, the real CLI.

Nothing here is mocked. A test writes a project (arcod.toml, definitions, job scripts),
starts the daemon on it, and talks to it exactly as an operator would: `python -m arcod ...`
with `--json`, reading stdout and the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]

# Duplicate mode (SPEC §9): with ARCOD_TEST_DUPLICATE=1 in the environment of pytest, every
# daemon a test starts delivers every actor message twice. CI runs the backfill and rerun
# tests this way (`make test-duplicate`); the results must not change.
DUPLICATE_ENV = "ARCOD_TEST_DUPLICATE"
DUPLICATE_EVERY_DELIVERY = "actor.*.deliver=duplicate"


def duplicate_mode() -> bool:
    return os.environ.get(DUPLICATE_ENV, "") not in ("", "0")

# A job that appends a line to counters/<asset>[__<partition>] and fails while
# fail/<asset> exists: counter files prove exactly which tasks ran, and how often.
COUNTING_JOB = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    here = Path(__file__).resolve().parent
    asset = os.environ["ARCOD_ASSET"].replace("/", "__")
    part = os.environ.get("ARCOD_PARTITION_KEY")
    name = asset + ("__" + part if part else "")
    (here / "counters").mkdir(exist_ok=True)
    with open(here / "counters" / name, "a") as f:
        f.write(os.environ["ARCOD_RUN_ID"] + " " + os.environ["ARCOD_ATTEMPT"] + " " + str(time.time()) + "\\n")
    print("env", {k: v for k, v in os.environ.items() if k.startswith("ARCOD_")})
    time.sleep(float(os.environ.get("JOB_SLEEP", "0")))
    sleep_file = here / "sleep" / asset
    if sleep_file.exists():
        time.sleep(float(sleep_file.read_text() or "30"))
    if (here / "fail" / asset).exists() or (part and (here / "fail" / name).exists()):
        print("failing on purpose", file=sys.stderr)
        sys.exit(3)
''')


def asset_toml(key: str, *, deps: list[str] = (), partitions: str | None = None, extra: str = "",
               command: str = '["python3", "job.py"]') -> str:
    lines = [f'[assets."{key}"]', f"command = {command}"]
    if deps:
        lines.append("deps = [" + ", ".join(f'"{d}"' for d in deps) + "]")
    if partitions:
        lines.append(f'partitions = "{partitions}"')
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Daemon:
    project: Path
    backend: str = "asyncio"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.project / "arcod.toml"

    @property
    def socket(self) -> Path:
        return self.project / ".arcod" / "arcod.sock"

    @property
    def log_path(self) -> Path:
        return self.project / "daemon.log"

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, **self.env, "ARCOD_BACKEND": self.backend, "PYTHONUNBUFFERED": "1"}
        if duplicate_mode():  # the test's own failpoints come last, so they win
            env["ARCOD_FAILPOINTS"] = ";".join(
                s for s in (DUPLICATE_EVERY_DELIVERY, self.env.get("ARCOD_FAILPOINTS", "")) if s)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arcod", "serve", "--config", str(self.config), "--backend", self.backend],
            cwd=self.project, env=env, stdout=log, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if self.socket.exists():
                r = self.cli("status")
                if r.code == 0:
                    if duplicate_mode():  # prove the mode is on, or the tests would prove nothing
                        assert DUPLICATE_EVERY_DELIVERY.split("=")[0] in r.json["failpoints"]["active"], r.stdout
                    return
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not become ready:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def cli(self, *args: str, timeout: float = 60.0, json_output: bool = True) -> Result:
        argv = [sys.executable, "-m", "arcod", *args, "--socket", str(self.socket)]
        if json_output:
            argv.append("--json")
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.project)
        return Result(p.returncode, p.stdout, p.stderr)

    def ok(self, *args: str, timeout: float = 60.0) -> Any:
        r = self.cli(*args, timeout=timeout)
        assert r.code == 0, f"arcod {' '.join(args)} -> {r.code}\nstdout: {r.stdout}\nstderr: {r.stderr}\n{self.daemon_log_tail()}"
        return r.json

    def refused(self, *args: str, code: str | None = None) -> dict:
        r = self.cli(*args)
        assert r.code == 1, f"expected refusal, got {r.code}: {r.stdout} {r.stderr}"
        err = r.json["error"]
        if code is not None:
            assert err["code"] == code, err
        return err

    def wait_run(self, run_id: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.ok("runs", "show", run_id)
            if run["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} did not finish: {run}\n{self.daemon_log_tail()}")

    def poll_backfill(self, backfill_id: str, done, what: str, timeout: float = 60.0) -> dict:
        """`backfill show` until `done(show)` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bf = self.ok("backfill", "show", backfill_id)
            if done(bf):
                return bf
            time.sleep(0.05)
        raise AssertionError(f"backfill {backfill_id}: {what} did not happen: {bf}\n{self.daemon_log_tail()}")

    def daemon_log_tail(self, n: int = 40) -> str:
        try:
            return "daemon log:\n" + "\n".join(self.log_path.read_text().splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def counter(self, name: str) -> list[str]:
        path = self.project / "counters" / name
        return path.read_text().splitlines() if path.exists() else []


# Ten days and two regions: the partitions most end-to-end projects are built on.
DAILY_AND_REGION = '''
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2024-01-11"

[partitions.region]
kind = "static"
keys = ["eu", "us"]
'''


def write_project(root: Path, assets: str, *, partitions: str = "", settings: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "arcod.toml").write_text(
        'state_dir = ".arcod"\ndefinitions = ["assets.toml"]\nmax_concurrent_runs = 4\n' + settings)
    (root / "assets.toml").write_text(partitions + "\n" + assets)
    (root / "job.py").write_text(COUNTING_JOB)
    for d in ("fail", "sleep", "counters"):
        (root / d).mkdir(exist_ok=True)
    return root


def decode(data: str) -> Any:
    return msgspec.json.decode(data)
