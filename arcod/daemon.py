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
from arcod.actors.backfill_controller import BackfillController, resume_message
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
from arcod.failpoints import Failpoints, FailpointSpecError, point_names
from arcod.store import retention
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


CPU_WORKERS = 4


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = datetime.now(timezone.utc)
        self.started_monotonic = time.monotonic()
        self.db: Database | None = None
        self.definitions: Definitions | None = None
        self.reloads = 0
        self.system: ActorSystem | None = None
        self.failpoints = Failpoints()
        self.draining = False
        self.server: ControlServer | None = None
        self.failpoint_names: list[str] = []
        self._dynamic_lock: anyio.Lock | None = None  # created on first use, inside the loop
        self._reload_lock: anyio.Lock | None = None
        self._cpu_limiter: anyio.CapacityLimiter | None = None

    def cpu_limiter(self) -> anyio.CapacityLimiter:
        """The worker threads that request handlers may hand CPU-heavy pure work to (placing
        100,000 status rows, counting a backfill's history). Off the event loop, so other
        clients and the actors are served meanwhile; few, since the GIL gives more threads no
        more speed, only more memory held at once."""
        if self._cpu_limiter is None:
            self._cpu_limiter = anyio.CapacityLimiter(CPU_WORKERS)
        return self._cpu_limiter

    async def load_definitions(self) -> Definitions:
        """Read the definition files; the stored dynamic partition keys complete them."""
        from arcod.store import definitions_store

        assert self.db is not None
        dynamic = await definitions_store.dynamic_keys(self.db)
        defs = await anyio.to_thread.run_sync(load_definitions, self.settings, dynamic)
        await definitions_store.record_code_version(self.db, defs)
        return defs

    async def refresh_dynamic_keys(self, tx=None) -> None:
        """Rebind the current definitions to the stored dynamic partition keys.

        `arcod partitions add|remove` calls it inside its write transaction (`tx`, whose
        uncommitted keys it reads), so the planner, which needs the writer to plan, can never
        see the old keys after the change commits; if the commit fails it is called again
        without `tx`, from the committed keys. The files are not re-read (that is `reload`)
        and the code_version stays: dynamic keys are data, not definitions.
        """
        assert self.definitions is not None
        await self._install_with_dynamic_keys(None, tx)

    async def _install_with_dynamic_keys(self, defs: Definitions | None, tx=None) -> None:
        """Install `defs` (or rebind the current definitions) with the stored dynamic keys.

        Every install goes through one lock and reads the keys inside it, so neither two
        concurrent `partitions add`s nor a reload racing one can install an older key snapshot
        last. The lock is never held while waiting for the writer unless the caller already
        holds it (`tx`), which is why a reload records its code_version before coming here.
        """
        import msgspec

        from arcod.core.partitions import bind_dynamic_keys
        from arcod.store import definitions_store, partitions_store

        assert self.db is not None
        if self._dynamic_lock is None:
            self._dynamic_lock = anyio.Lock()
        async with self._dynamic_lock:
            if tx is None:
                keys = await definitions_store.dynamic_keys(self.db)
            else:
                keys = await partitions_store.all_dynamic_keys(tx)
            base = defs if defs is not None else self.definitions
            partitions = {name: bind_dynamic_keys(d, keys) for name, d in base.partitions.items()}
            self.definitions = msgspec.structs.replace(base, partitions=partitions)

    async def reload(self) -> dict:
        """Swap in new definitions; on error the old ones stay and the error is returned.

        The files are read with the keys committed at that moment, but a `partitions add`
        may commit while they are parsed; the install re-reads the keys under the lock so the
        new definitions never lose a key that was already acknowledged. (`load_definitions`
        records the code_version in a write transaction first, which also waits out any
        `partitions add` holding the writer; nothing yields between that and the install.)
        """
        if self._reload_lock is None:
            self._reload_lock = anyio.Lock()
        # One reload at a time: two overlapping ones (SIGHUP and `arcod reload`) could otherwise
        # install the older parse last. Taken before the writer and the dynamic-keys lock, and
        # no holder of those waits for it, so it adds no cycle.
        async with self._reload_lock:
            previous = self.definitions.code_version if self.definitions else None
            await self._install_with_dynamic_keys(await self.load_definitions())
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

                try:
                    self.failpoints = Failpoints.from_config(settings.failpoints, settings.failpoints_seed)
                    self.system = self._build_actors(db)
                except FailpointSpecError as exc:
                    raise StartupError(f"{exc} (from `failpoints` in {settings.config_path} or $ARCOD_FAILPOINTS)") from None
                if self.failpoints.armed:
                    log.warning("failpoints are armed: this daemon fails on purpose", seed=self.failpoints.seed,
                                failpoints=self.failpoints.active())
                await recover_orphaned_attempts(db, term_grace_s=settings.term_grace_s)
                handlers = Handlers(self)
                server = self.server = ControlServer(
                    settings.socket_path, handlers.handle, failpoints=self.failpoints,
                    max_connections=settings.max_connections, idle_timeout_s=settings.client_idle_timeout_s)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                    await tg.start(self.system.run)
                    await self.system.send("dispatcher", DaemonStarted(idem_key=f"started:{uuid.uuid4().hex}"))
                    await self.system.send("backfill", resume_message())  # replan free slots after a restart
                    await tg.start(server.serve)
                    tg.start_soon(lambda: retention.prune_daily(  # once a day if retention_days > 0
                        db, logs_dir=settings.logs_dir, retention_days=settings.retention_days))
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
                            window_for=self.partition_window, max_log_bytes=settings.max_log_bytes)
        dispatcher = Dispatcher(
            max_concurrent_runs=settings.max_concurrent_runs, max_tasks_per_run=settings.max_tasks_per_run,
            logs_dir=settings.logs_dir, cancel_attempts=executor.cancel_run,
        )
        planner = Planner(lambda: self.definitions)
        actors = [planner, dispatcher, executor, HistoryIndexer(), BackfillController(lambda: self.definitions)]
        system = ActorSystem(db, actors, failpoints=self.failpoints)
        self.failpoint_names = point_names(a.name for a in actors)
        self.failpoints.check_names(self.failpoint_names)
        executor.failpoints = self.failpoints
        self._drainable = (dispatcher, executor)
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
                log.info("shutting down: draining", signal=signal.Signals(signum).name,
                         grace_s=self.settings.term_grace_s)
                async with anyio.create_task_group() as drain:
                    async def cut_short() -> None:
                        async for again in signals:
                            if again != signal.SIGHUP:
                                log.info("second signal: stopping the running tasks now")
                                drain.cancel_scope.cancel()
                                return

                    drain.start_soon(cut_short)
                    await self.drain(self.settings.term_grace_s)
                    drain.cancel_scope.cancel()
                scope.cancel()
                return

    async def drain(self, grace_s: float) -> None:
        """The graceful part of a shutdown: stop taking requests and starting work, then wait
        up to `grace_s` for the running task processes to end on their own. What still runs
        afterwards is stopped when the daemon's task group is cancelled (SIGTERM, term_grace_s,
        SIGKILL) and recovered on the next start as `daemon_restart`, like after a crash."""
        self.draining = True
        if self.server is not None:
            self.server.stop_accepting()
        dispatcher, executor = self._drainable
        dispatcher.draining = executor.draining = True
        with anyio.move_on_after(grace_s) as waited:
            await executor.wait_idle()
            # ...and for the actors to record what those tasks did (outcomes, run ends, history).
            while await self.db.read_one("SELECT 1 FROM outbox LIMIT 1") is not None:
                await anyio.sleep(0.02)
        log.info("drained" if not waited.cancelled_caught else "grace period over; stopping the running tasks")

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
            "failpoints": {"active": self.failpoints.active(), "seed": self.failpoints.seed,
                           "points": self.failpoint_names},
            "runs": {r["state"]: r["n"] for r in await self.db.read_all(
                "SELECT state, COUNT(*) AS n FROM runs GROUP BY state")},
        }


def not_found(what: str, ident: str, hint: str) -> ArcodError:
    return ArcodError(errors.NOT_FOUND, f"no {what} {ident!r}; {hint}", {"what": what, "id": ident})
