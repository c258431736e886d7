from __future__ import annotations

import pytest

from tests.e2e.harness import Daemon, asset_toml, write_project

# A small project with every kind of request target: a chain, a daily-partitioned pair, a
# static-partitioned asset whose keys are hostile to shells and paths.
PARTITIONS = '''
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2024-03-01"

[partitions.odd]
kind = "static"
keys = ["$(touch PWNED)", "x;touch PWNED2", "`touch PWNED3`", "/etc/passwd", ".hidden", "%2e%2e", "sp ace", "é"]
'''
ASSETS = (
    asset_toml("a", extra='group = "ingest"\ntags = { tier = "bronze" }')
    + asset_toml("b", deps=["a"])
    + asset_toml("c", deps=["b"])
    + asset_toml("raw/orders", partitions="daily")
    + asset_toml("sales/daily", deps=["raw/orders"], partitions="daily")
    + asset_toml("odd/plain", partitions="odd", command='["printenv", "ARCOD_PARTITION_KEY"]')
    + asset_toml("odd/shell", partitions="odd",
                 command='"printf %s \\"$ARCOD_PARTITION_KEY\\" > seen_$ARCOD_ATTEMPT.txt"')
)


def start_daemon(root, *, settings: str = "", backend: str = "asyncio", env: dict | None = None) -> Daemon:
    d = Daemon(write_project(root, ASSETS, partitions=PARTITIONS, settings=settings), backend=backend, env=env or {})
    d.start()
    return d


def stop(d: Daemon) -> None:
    try:
        d.stop()
    except Exception:
        if d.proc is not None:
            d.proc.kill()


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    """One daemon for a whole module: hypothesis examples share it, as clients of a long-lived
    daemon would. A short idle timeout and a small connection cap make those limits testable."""
    d = start_daemon(tmp_path_factory.mktemp("fuzz") / "proj",
                     settings="client_idle_timeout_s = 2.0\nmax_connections = 16\n")
    yield d
    stop(d)


from tests.e2e.conftest import daemons  # noqa: E402,F401  (the e2e fixture, for one-off projects)
