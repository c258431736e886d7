"""The `arcod serve` process: owns the state directory, the database, the actors and the socket.

One task group owns everything the daemon runs: the actor system, the control server and the
signal watcher. Cancelling that group is the only way anything stops, so shutdown is the same
path whether it comes from SIGTERM, SIGINT or a crash of a component.

Request handlers live in `arcod.control.handlers`; this module only wires the pieces and keeps
the mutable daemon state (the current definitions) in one place.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

import anyio
import structlog

import uuid

from arcod import __version__
from arcod.actors.dispatcher import Dispatcher
from arcod.actors.executor import Executor
from arcod.actors.history import HistoryIndexer
from arcod.actors.planner import Planner
from arcod.actors.recovery import recover_orphaned_attempts
from arcod.actors.run_messages import DaemonStarted
from arcod.actors.runtime import ActorSystem
from arcod.config import Settings, load_definitions
from arcod.control.server import ControlServer, StateDirLocked, acquire_state_lock
from arcod.core import errors
from arcod.core.definitions import Definitions
from arcod.core.errors import ArcodError
from arcod.store.database import Database, open_database

log = structlog.get_logger("arcod.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state directory 0700, or refuse one that others could write into."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = state_dir.stat()
    if st.st_mode & stat.S_IWOTH:
        raise StartupError(
            f"state directory {state_dir} is world-writable; anyone could replace the socket "
            f"or the database. Fix it with: chmod 700 {state_dir}"
        )
    if st.st_uid != os.getuid():
        raise StartupError(f"state directory {state_dir} belongs to uid {st.st_uid}, not to us ({os.getuid()})")
    os.chmod(state_dir, 0o700)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = datetime.now(timezone.utc)
        self.started_monotonic = time.monotonic()
        self.db: Database | None = None
        self.definitions: Definitions | None = None
        self.reloads = 0
        self.system: ActorSystem | None = None

    async def load_definitions(self) -> Definitions:
        """Read the definition files; the stored dynamic partition keys complete them."""
        from arcod.store import definitions_store

        assert self.db is not None
        dynamic = await definitions_store.dynamic_keys(self.db)
        defs = await anyio.to_thread.run_sync(load_definitions, self.settings, dynamic)
        await definitions_store.record_code_version(self.db, defs)
        return defs

    async def reload(self) -> dict:
        """Swap in new definitions; on error the old ones stay and the error is returned."""
        previous = self.definitions.code_version if self.definitions else None
        self.definitions = await self.load_definitions()
        self.reloads += 1
        changed = previous != self.definitions.code_version
        log.info("definitions reloaded", code_version=self.definitions.code_version, changed=changed)
        return {
            "code_version": self.definitions.code_version,
            "previous_code_version": previous,
            "changed": changed,
            "assets": len(self.definitions.assets),
        }

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        prepare_state_dir(settings.state_dir)
        try:
            lock_fd = acquire_state_lock(settings.state_dir)
        except StateDirLocked as exc:
            raise StartupError(str(exc)) from None
        try:
            async with open_database(settings.db_path) as db:
                self.db = db
                self.definitions = await self.load_definitions()
                from arcod.control.handlers import Handlers

                self.system = self._build_actors(db)
                await recover_orphaned_attempts(db, term_grace_s=settings.term_grace_s)
                handlers = Handlers(self)
                server = ControlServer(settings.socket_path, handlers.handle)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                    await tg.start(self.system.run)
                    await self.system.send("dispatcher", DaemonStarted(idem_key=f"started:{uuid.uuid4().hex}"))
                    await tg.start(server.serve)
                    log.info(
                        "arcod ready",
                        version=__version__,
                        pid=os.getpid(),
                        socket=str(settings.socket_path),
                        code_version=self.definitions.code_version,
                        assets=len(self.definitions.assets),
                    )
                    task_status.started()
        finally:
            try:
                settings.socket_path.unlink(missing_ok=True)
            finally:
                os.close(lock_fd)
            log.info("arcod stopped")

    def _build_actors(self, db: Database) -> ActorSystem:
        settings = self.settings
        executor = Executor(db, project_dir=settings.project_dir, term_grace_s=settings.term_grace_s,
                            window_for=self.partition_window)
        dispatcher = Dispatcher(
            max_concurrent_runs=settings.max_concurrent_runs, max_tasks_per_run=settings.max_tasks_per_run,
            logs_dir=settings.logs_dir, cancel_attempts=executor.cancel_run,
        )
        planner = Planner(lambda: self.definitions)
        system = ActorSystem(db, [planner, dispatcher, executor, HistoryIndexer()])
        executor.send = system.send
        return system

    def partition_window(self, definition: str, key: str) -> tuple[str, str] | None:
        """ISO bounds of a time-window partition, for ARCOD_PARTITION_START/_END."""
        defn = self.definitions.partitions.get(definition) if self.definitions else None
        window = getattr(defn, "window", None)
        if window is None:
            return None
        start, end = window(key)
        return start.isoformat(), end.isoformat()

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await self.reload()
                    except ArcodError as exc:
                        log.error("reload failed; keeping the previous definitions", error=exc.message)
                    continue
                log.info("shutting down", signal=signal.Signals(signum).name)
                scope.cancel()
                return

    async def status(self) -> dict:
        assert self.definitions is not None
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "config": str(self.settings.config_path),
            "state_dir": str(self.settings.state_dir),
            "socket": str(self.settings.socket_path),
            "database": str(self.settings.db_path),
            "code_version": self.definitions.code_version,
            "assets": len(self.definitions.assets),
            "partitions_definitions": len(self.definitions.partitions),
            "reloads": self.reloads,
            "max_concurrent_runs": self.settings.max_concurrent_runs,
            "runs": {r["state"]: r["n"] for r in await self.db.read_all(
                "SELECT state, COUNT(*) AS n FROM runs GROUP BY state")},
        }


def not_found(what: str, ident: str, hint: str) -> ArcodError:
    return ArcodError(errors.NOT_FOUND, f"no {what} {ident!r}; {hint}", {"what": what, "id": ident})
