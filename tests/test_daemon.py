"""The daemon's own state: the current definitions, swapped by reloads and dynamic-key changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

import arcod.daemon
from arcod.config import load_settings
from arcod.daemon import Daemon
from arcod.store import partitions_store
from arcod.store.database import open_database

pytestmark = pytest.mark.anyio

ASSETS = '''
[partitions.shops]
kind = "dynamic"

[assets.report]
partitions = "shops"
command = ["true"]
'''


def project(root: Path) -> Path:
    (root / "arcod.toml").write_text('state_dir = ".arcod"\ndefinitions = ["assets.toml"]\n')
    (root / "assets.toml").write_text(ASSETS)
    return root / "arcod.toml"


async def add_shop(daemon: Daemon, key: str) -> None:
    """What `arcod partitions add` does: store the key and rebind inside one write transaction."""
    async with daemon.db.transaction() as tx:
        await partitions_store.add_keys(tx, "shops", [key])
        await daemon.refresh_dynamic_keys(tx)


@asynccontextmanager
async def daemon_with_berlin(root: Path) -> AsyncIterator[Daemon]:
    """The daemon's state without its actors or socket: database, definitions, key `berlin`."""
    settings = load_settings(project(root))
    settings.state_dir.mkdir()
    daemon = Daemon(settings)
    async with open_database(settings.db_path) as db:
        daemon.db = db
        daemon.definitions = await daemon.load_definitions()
        await add_shop(daemon, "berlin")
        yield daemon


def shop_keys(daemon: Daemon) -> list[str]:
    return list(daemon.definitions.partitions["shops"].keys)


async def test_a_key_added_while_a_reload_parses_the_files_survives_the_reload(tmp_path, monkeypatch):
    async with daemon_with_berlin(tmp_path) as daemon:

        parse = arcod.daemon.load_definitions

        def parse_while_a_key_is_added(settings, keys):
            # The reload has read the stored keys (berlin only); `partitions add lisbon` commits
            # and is acknowledged before the parse ends.
            assert dict(keys) == {"shops": ["berlin"]}
            anyio.from_thread.run(add_shop, daemon, "lisbon")
            return parse(settings, keys)

        monkeypatch.setattr(arcod.daemon, "load_definitions", parse_while_a_key_is_added)
        await daemon.reload()

        assert shop_keys(daemon) == ["berlin", "lisbon"]


async def test_a_reload_picks_up_changed_files_and_keeps_the_stored_keys(tmp_path):
    async with daemon_with_berlin(tmp_path) as daemon:
        before = daemon.definitions.code_version

        (tmp_path / "assets.toml").write_text(ASSETS + '\n[assets.summary]\ndeps = ["report"]\n'
                                              'partitions = "shops"\ncommand = ["true"]\n')
        result = await daemon.reload()

        assert result["changed"] and result["previous_code_version"] == before
        assert set(daemon.definitions.assets) == {"report", "summary"}
        assert shop_keys(daemon) == ["berlin"]


async def test_overlapping_reloads_install_the_newest_files_last(tmp_path, monkeypatch):
    """A SIGHUP reload still parsing the old files and an `arcod reload` after an edit: the
    second waits for the first, so the edit is what stays installed."""
    import threading

    async with daemon_with_berlin(tmp_path) as daemon:
        parse = arcod.daemon.load_definitions
        first_parsing, let_first_finish = threading.Event(), threading.Event()
        calls = []

        def slow_first_parse(settings, keys):
            calls.append(None)
            defs = parse(settings, keys)
            if len(calls) == 1:
                first_parsing.set()
                let_first_finish.wait(10)
            return defs

        monkeypatch.setattr(arcod.daemon, "load_definitions", slow_first_parse)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.reload)
            await anyio.to_thread.run_sync(first_parsing.wait, 10)
            (tmp_path / "assets.toml").write_text(ASSETS + '\n[assets.summary]\ndeps = ["report"]\n'
                                                  'partitions = "shops"\ncommand = ["true"]\n')
            tg.start_soon(daemon.reload)
            await anyio.sleep(0.3)  # without the reload lock the second one is done by now
            let_first_finish.set()

        assert set(daemon.definitions.assets) == {"report", "summary"}
        assert shop_keys(daemon) == ["berlin"]
