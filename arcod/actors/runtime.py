"""The actor runtime: independent loops that apply messages exactly once, durably.

Each actor is a loop that takes one message at a time and applies it in one SQLite
transaction, together with everything that makes the application durable and idempotent:

* the event row `(actor, idem_key)` with the message and its reply: a message whose key is
  already in `events` is a duplicate and changes nothing (its stored reply is returned);
* the messages the actor sends, written to the `outbox` (the transactional outbox);
* the deletion of the outbox row that carried the message in.

Only after the commit does the runtime post the sent messages to their receivers and start the
actor's after-commit effects (spawning a process, say). A crash between commit and post loses
nothing: the sent messages are still in the outbox.

Delivery has two roads. The outbox is the queue; each actor's anyio memory channel is the fast
road that carries a message straight to its receiver without reading it back from SQLite. A
receiver in *backlog* mode reads its messages from the outbox instead: it first empties its
channel, then pages through its outbox rows in id (commit) order, and only then goes back to
the channel. While a receiver has a backlog, posts to it skip the channel, so messages from one
sender are applied in the order they were sent.

Every mailbox starts in backlog mode. That is how messages left in the outbox by an earlier
process (crashed or stopped) are re-delivered on start, before anything new; `run()` signals
`started` as soon as the loops run, without waiting for that backlog.

Channel size. Actors send to each other in cycles (dispatcher -> executor -> dispatcher), so an
actor loop must never wait for room in a channel: if A waited on B's full channel while B
waited on A's, both would stop for good. An actor therefore posts with `send_nowait`, and when
the receiver's channel is full it puts the receiver in backlog mode instead; the message is
already in the outbox. The buffer size thus never decides correctness or liveness, only how
often a busy receiver reads its messages back from SQLite: `DEFAULT_BUFFER_SIZE` (128) is many
times the fan-out of one application, and a few kilobytes of memory per actor. Only `submit`
waits for room: its caller (the control server) is outside the actor graph, and waiting is the
back-pressure it should feel.

Group commit. Every actor shares the one writer, and each application is a commit (an fsync).
Under sustained load an actor that receives more messages per unit of work than the others
(the history indexer gets two per task) would fall further behind for as long as the load
lasts, since the writer is shared fairly. So a receiver draining its backlog applies up to
`BACKLOG_BATCH` outbox messages in one transaction: each is applied, recorded and removed from
the outbox exactly as on its own, in order, and the batch commits once. If any of them is
refused or fails, the batch rolls back and its messages are applied one at a time, so a
refusal or a failure affects only its own message. With failpoints armed, every message is
applied on its own, so each boundary is hit once per message.

Failures. An `ArcodError` from `apply` is a refusal: the transaction rolls back and nothing is
recorded, so the idempotency key stays free. `submit` re-raises it to its caller; a refused
message from the outbox is deleted (a refusal is a decision, retrying cannot change it) and
logged. Any other exception is a bug or an outage: it is logged with the actor, kind and key,
the transaction rolls back, `submit` re-raises it, and a message from the outbox keeps its row,
to be retried when the receiver drains its backlog: the runtime puts the receiver back in
backlog mode `RETRY_AFTER_S` later (and again after each failure), so a transient failure
delays the message instead of leaving it until the next start.
After-commit effects run in the system's task group; one that raises is logged and does not
stop anything. They are not persisted: an actor whose effects must survive a crash records its
intent in the transaction and reconciles on start.

Replies are JSON round-tripped (`msgspec.json`) even on first application, so the first caller
and any duplicate get the same value: builtins (a reply struct comes back as a dict).

Failpoints (§9 of the spec) sit at every boundary: `actor.<name>.before_persist`,
`.after_persist`, `.before_emit`, `.after_emit`, plus `actor.<name>.deliver` for duplicated
delivery. A failpoint error after the commit is reported to the caller, but the committed
outcome is still carried out (sent messages through the receiver's backlog, effects started):
only a crash may leave it half done, and the outbox covers that.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import anyio
import msgspec
import structlog

from arcod.actors.messages import Message, decode_message, encode_message, message_kind
from arcod.core.errors import ArcodError
from arcod.store.database import Database, Transaction

DEFAULT_BUFFER_SIZE = 128
RETRY_AFTER_S = 1.0  # how long after a failed outbox message its receiver re-reads its backlog
_OUTBOX_PAGE = 256
BACKLOG_BATCH = 64  # outbox messages applied in one transaction while draining a backlog

logger = structlog.get_logger("arcod.actors")


class Failpoints(Protocol):
    """Where faults are injected. `hit` may raise, end the process, or return an awaitable to delay."""

    def hit(self, name: str) -> Awaitable[None] | None: ...

    def should_duplicate(self, name: str) -> bool: ...


class NoFailpoints:
    """The production default: every failpoint passes."""

    def hit(self, name: str) -> None:
        return None

    def should_duplicate(self, name: str) -> bool:
        return False


class Outcome(msgspec.Struct, kw_only=True):
    """What applying a message decided, beyond its writes in the transaction.

    `reply` goes back to a `submit` caller (and is stored for duplicates), `send` is persisted
    to the outbox in the same transaction, `after_commit` effects start once it committed.
    """

    reply: Any = None
    send: list[tuple[str, Message]] = []
    after_commit: list[Callable[[], Awaitable[None]]] = []


class Actor(abc.ABC):
    """One loop of the daemon. Subclasses name themselves and the message types they accept."""

    name: ClassVar[str]
    accepts: ClassVar[tuple[type[Message], ...]]

    @abc.abstractmethod
    async def apply(self, tx: Transaction, msg: Message) -> Outcome:
        """Apply `msg` inside `tx`. Raise ArcodError to refuse it; nothing is then recorded."""


class _Reply:
    """Where an actor loop hands the result of a `submit` back to its caller."""

    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def succeed(self, value: Any) -> None:
        if not self.done.is_set():
            self.value = value
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Delivery(NamedTuple):
    message: Message
    reply: _Reply | None = None  # set for `submit`: where the caller waits
    from_outbox: bool = False  # the message has an outbox row (sent, not submitted)


class _BatchFailed(Exception):
    """A group-commit batch rolled back because of message `index` (0 also: the commit)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


_WAKE = object()  # posted to a waiting receiver that has just been put in backlog mode


class _Mailbox:
    def __init__(self, actor: Actor, buffer_size: int) -> None:
        self.actor = actor
        self.send_stream, self.receive_stream = anyio.create_memory_object_stream[object](buffer_size)
        self.backlog = True  # the outbox may hold messages for this actor that its channel does not
        self.generation = 0  # bumped on every post that went to the outbox only
        self.retry_pending = False  # a re-read of the backlog is scheduled after a failure
        self.rescan = False  # the next backlog page starts again from the oldest row


class ActorSystem:
    """Runs a set of actors in one task group; the entry points for everything outside it."""

    def __init__(
        self,
        db: Database,
        actors: Sequence[Actor],
        *,
        failpoints: Failpoints | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
    ) -> None:
        if buffer_size < 1:
            # A zero-size channel has no room for the wake-up that tells a receiver about to
            # wait that its messages went to the outbox; it could wait forever.
            raise ValueError(f"buffer_size must be at least 1, not {buffer_size}")
        self.db = db
        self.failpoints: Failpoints = failpoints if failpoints is not None else NoFailpoints()
        self._mailboxes: dict[str, _Mailbox] = {}
        for actor in actors:
            name = getattr(actor, "name", None)
            if not name or not getattr(actor, "accepts", None):
                raise TypeError(f"{type(actor).__name__} must set the class attributes `name` and `accepts`")
            if name in self._mailboxes:
                raise ValueError(f"two actors are named {name!r}; actor names must be unique")
            self._mailboxes[name] = _Mailbox(actor, buffer_size)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._state = "new"
        self._waiting: set[_Reply] = set()

    # --- entry points ---------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every actor until cancelled. A system runs once; build a new one to restart."""
        if self._state != "new":
            raise RuntimeError("this ActorSystem has already run; build a new one to restart")
        self._state = "starting"
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                for name, mailbox in self._mailboxes.items():
                    tg.start_soon(self._serve, mailbox, name=f"actor {name}")
                self._state = "running"
                task_status.started()
        finally:
            self._state = "stopped"
            self._task_group = None
            for reply in list(self._waiting):
                reply.fail(RuntimeError("the actor system stopped before answering; retry with the same idem_key"))

    async def submit(self, target: str, msg: Message) -> Any:
        """Apply `msg` at `target` and return its reply (the stored one if `msg` is a duplicate)."""
        mailbox = self._mailbox_for(target, msg)
        if self._state != "running":
            raise RuntimeError("the actor system is not running; start ActorSystem.run() first")
        reply = _Reply()
        self._waiting.add(reply)
        try:
            await mailbox.send_stream.send(_Delivery(msg, reply))
            if self.failpoints.should_duplicate(f"actor.{target}.deliver"):
                await mailbox.send_stream.send(_Delivery(msg))
            await reply.done.wait()
        finally:
            self._waiting.discard(reply)
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def send(self, target: str, msg: Message) -> None:
        """Deliver `msg` to `target` without waiting: durable once this returns."""
        self._mailbox_for(target, msg)
        async with self.db.transaction() as tx:
            await self._persist_outgoing(tx, [(target, msg)])
        self._post(target, msg)

    # --- the loops ------------------------------------------------------------------------

    async def _serve(self, mailbox: _Mailbox) -> None:
        while True:
            if mailbox.backlog:
                try:
                    item = mailbox.receive_stream.receive_nowait()
                except anyio.WouldBlock:
                    await self._drain_backlog(mailbox)
                    continue
            else:
                item = await mailbox.receive_stream.receive()
            if item is not _WAKE:
                await self._deliver(mailbox.actor, item)

    async def _drain_backlog(self, mailbox: _Mailbox) -> None:
        """Apply every outbox row addressed to this actor, oldest first, then leave backlog mode."""
        actor = mailbox.actor
        after = 0
        mailbox.rescan = False  # this drain starts from the oldest row anyway
        while True:
            generation = mailbox.generation
            try:
                rows = await self.db.read_all(
                    "SELECT id, body FROM outbox WHERE target = ? AND id > ? ORDER BY id LIMIT ?",
                    (actor.name, after, _OUTBOX_PAGE),
                )
            except Exception:
                logger.exception("cannot read the outbox; retrying in a second", actor=actor.name)
                await anyio.sleep(1)
                continue
            batch: list[Message] = []
            for row in rows:
                after = row["id"]
                try:
                    msg = decode_message(row["body"], actor.accepts)
                except msgspec.MsgspecError as exc:
                    # Kept for an operator to inspect; it cannot be applied by this code.
                    logger.error("undecodable outbox row skipped", actor=actor.name, outbox_id=after, error=str(exc))
                    continue
                batch.append(msg)
            for start in range(0, len(batch), BACKLOG_BATCH):
                await self._deliver_backlog(actor, batch[start:start + BACKLOG_BATCH])
            if mailbox.rescan:
                mailbox.rescan = False
                after = 0
                continue
            if len(rows) < _OUTBOX_PAGE and mailbox.generation == generation:
                mailbox.backlog = False
                return

    async def _deliver_backlog(self, actor: Actor, msgs: list[Message]) -> None:
        """Apply outbox messages in as few transactions as they allow (group commit).

        When the message at index i is refused or fails, the batch rolls back; the messages
        before it are applied again as a batch, message i goes through `_deliver` on its own
        (which handles its refusal or failure), and the rest are batched again.
        """
        armed = getattr(self.failpoints, "armed", not isinstance(self.failpoints, NoFailpoints))
        while msgs:
            failed_at = len(msgs)  # none: every message goes through `_deliver`
            if len(msgs) > 1 and not armed:
                try:
                    outcomes = await self._apply_batch(actor, msgs)
                except _BatchFailed as exc:
                    failed_at = exc.index
                else:
                    log = logger.bind(actor=actor.name)
                    for outcome in outcomes:
                        for target, sent in outcome.send:
                            self._post(target, sent)
                        self._start_effects(outcome, log)
                    return
            if 0 < failed_at < len(msgs):
                await self._deliver_backlog(actor, msgs[:failed_at])
            for msg in msgs[failed_at:failed_at + 1] if failed_at < len(msgs) else msgs:
                for _ in range(self._copies(actor.name)):
                    await self._deliver(actor, _Delivery(msg, from_outbox=True))
            msgs = msgs[failed_at + 1:]

    async def _apply_batch(self, actor: Actor, msgs: list[Message]) -> list[Outcome]:
        """`_apply` for several messages in one transaction, without failpoints or replies.

        Raises `_BatchFailed` (the transaction rolled back) naming the message that was refused
        or failed, or index 0 when the transaction itself failed (commit, storage).
        """
        name = actor.name
        outcomes: list[Outcome] = []
        index = 0
        try:
            async with self.db.transaction() as tx:
                for index, msg in enumerate(msgs):
                    row = await tx.fetch_one("SELECT 1 FROM events WHERE actor = ? AND idem_key = ?", (name, msg.idem_key))
                    if row is None:
                        outcome = await actor.apply(tx, msg)
                        if not isinstance(outcome, Outcome):
                            raise TypeError(f"{type(actor).__name__}.apply returned {outcome!r}, not an Outcome")
                        for target, sent in outcome.send:
                            self._mailbox_for(target, sent)
                        await tx.execute(
                            "INSERT INTO events (actor, idem_key, kind, body, result) VALUES (?, ?, ?, ?, ?)",
                            (name, msg.idem_key, message_kind(msg), encode_message(msg), msgspec.json.encode(outcome.reply)),
                        )
                        await self._persist_outgoing(tx, outcome.send)
                        outcomes.append(outcome)
                    await tx.execute("DELETE FROM outbox WHERE target = ? AND idem_key = ?", (name, msg.idem_key))
                index = 0  # past the last message: a failure now is the commit's
        except Exception as exc:
            raise _BatchFailed(index) from exc
        return outcomes

    async def _deliver(self, actor: Actor, delivery: _Delivery) -> None:
        """Apply one delivery; never raises except for cancellation."""
        msg = delivery.message
        kind = message_kind(msg)
        log = logger.bind(actor=actor.name, kind=kind, idem_key=msg.idem_key)
        try:
            with structlog.contextvars.bound_contextvars(actor=actor.name, kind=kind, idem_key=msg.idem_key):
                value = await self._apply(actor, msg, log)
        except ArcodError as exc:
            if delivery.reply is not None:
                delivery.reply.fail(exc)
            elif delivery.from_outbox:
                log.warning("message refused; removing it from the outbox", code=exc.code, error=exc.message)
                await self._drop_refused(actor, msg, log)
        except Exception as exc:
            log.exception("applying a message failed; rolled back")
            if delivery.reply is not None:
                delivery.reply.fail(exc)
            elif delivery.from_outbox:
                self._retry_later(actor.name)
        else:
            if delivery.reply is not None:
                delivery.reply.succeed(value)

    async def _drop_refused(self, actor: Actor, msg: Message, log: Any) -> None:
        # Only this very message: a later one that reuses the key is not refused by this.
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "DELETE FROM outbox WHERE target = ? AND idem_key = ? AND body = ?",
                    (actor.name, msg.idem_key, encode_message(msg)),
                )
        except Exception:
            log.exception("could not remove a refused message from the outbox; it will be retried")

    async def _apply(self, actor: Actor, msg: Message, log: Any) -> Any:
        name = actor.name
        await self._hit(f"actor.{name}.before_persist")
        outcome: Outcome | None = None
        async with self.db.transaction() as tx:
            row = await tx.fetch_one("SELECT result FROM events WHERE actor = ? AND idem_key = ?", (name, msg.idem_key))
            if row is not None:
                result = row["result"]
            else:
                outcome = await actor.apply(tx, msg)
                if not isinstance(outcome, Outcome):
                    raise TypeError(f"{type(actor).__name__}.apply returned {outcome!r}, not an Outcome")
                for target, sent in outcome.send:
                    self._mailbox_for(target, sent)
                result = msgspec.json.encode(outcome.reply)
                await tx.execute(
                    "INSERT INTO events (actor, idem_key, kind, body, result) VALUES (?, ?, ?, ?, ?)",
                    (name, msg.idem_key, message_kind(msg), encode_message(msg), result),
                )
                await self._persist_outgoing(tx, outcome.send)
            await tx.execute("DELETE FROM outbox WHERE target = ? AND idem_key = ?", (name, msg.idem_key))
        try:
            await self._hit(f"actor.{name}.after_persist")
            await self._hit(f"actor.{name}.before_emit")
        except Exception:
            if outcome is not None:
                for target, _ in outcome.send:
                    self._enter_backlog(self._mailboxes[target])
                self._start_effects(outcome, log)
            raise
        if outcome is not None:
            for target, sent in outcome.send:
                self._post(target, sent)
            self._start_effects(outcome, log)
        await self._hit(f"actor.{name}.after_emit")
        log.debug("applied" if outcome is not None else "duplicate ignored")
        return msgspec.json.decode(result) if result is not None else None

    # --- plumbing -------------------------------------------------------------------------

    def _mailbox_for(self, target: str, msg: Message) -> _Mailbox:
        """The receiver's mailbox, after checking the message is one it can take."""
        mailbox = self._mailboxes.get(target)
        if mailbox is None:
            raise ValueError(f"no actor named {target!r}; the actors are {sorted(self._mailboxes)}")
        if not isinstance(msg, mailbox.actor.accepts):
            raise TypeError(f"actor {target!r} does not accept {type(msg).__name__} messages")
        if not msg.idem_key:
            raise ValueError(f"a {type(msg).__name__} for {target!r} has an empty idem_key")
        return mailbox

    async def _persist_outgoing(self, tx: Transaction, sends: Iterable[tuple[str, Message]]) -> None:
        await tx.executemany(
            "INSERT INTO outbox (target, idem_key, kind, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (target, idem_key) DO NOTHING",
            [(target, msg.idem_key, message_kind(msg), encode_message(msg)) for target, msg in sends],
        )

    def _post(self, target: str, msg: Message) -> None:
        """Hand a message that is already in the outbox to its receiver, without ever waiting."""
        mailbox = self._mailboxes[target]
        for _ in range(self._copies(target)):
            if mailbox.backlog:
                mailbox.generation += 1  # the receiver reads it from the outbox, after older ones
                continue
            try:
                mailbox.send_stream.send_nowait(_Delivery(msg, from_outbox=True))
            except anyio.WouldBlock:
                self._enter_backlog(mailbox)

    def _enter_backlog(self, mailbox: _Mailbox) -> None:
        mailbox.generation += 1
        if not mailbox.backlog:
            mailbox.backlog = True
            try:
                mailbox.send_stream.send_nowait(_WAKE)  # in case the receiver waits on an empty channel
            except anyio.WouldBlock:
                pass  # the channel is full, so the receiver will not wait before it sees the backlog

    def _retry_later(self, target: str) -> None:
        """Re-read `target`'s outbox backlog soon: the failed message is still there."""
        mailbox = self._mailboxes[target]
        if mailbox.retry_pending or self._task_group is None:
            return
        mailbox.retry_pending = True

        async def later() -> None:
            await anyio.sleep(RETRY_AFTER_S)
            mailbox.retry_pending = False
            # The failed message is behind a drain that may still be running: make that drain
            # (or the next) start over from the oldest row, or it would skip past it.
            mailbox.rescan = True
            self._enter_backlog(mailbox)

        self._task_group.start_soon(later)

    def _copies(self, target: str) -> int:
        return 2 if self.failpoints.should_duplicate(f"actor.{target}.deliver") else 1

    def _start_effects(self, outcome: Outcome, log: Any) -> None:
        assert self._task_group is not None, "messages are applied only while the system runs"
        for effect in outcome.after_commit:
            self._task_group.start_soon(self._run_effect, effect, log)

    @staticmethod
    async def _run_effect(effect: Callable[[], Awaitable[None]], log: Any) -> None:
        try:
            await effect()
        except Exception:
            log.exception("after-commit effect failed", effect=getattr(effect, "__qualname__", repr(effect)))

    async def _hit(self, name: str) -> None:
        pending = self.failpoints.hit(name)
        if inspect.isawaitable(pending):
            await pending
