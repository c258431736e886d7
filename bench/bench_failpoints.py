"""What failpoints cost when they are off: per call, and per applied actor message.

The daemon always builds a `Failpoints` registry; with nothing configured its `hit` is one
attribute test. This measures that against the runtime's own `NoFailpoints` stub and an empty
function, then applies a stream of messages through a real ActorSystem (SQLite on disk, as the
daemon configures it) with each, and with an armed registry whose points never fire (the slow path: a dict lookup and a term walk per point).

Usage: .venv/bin/python bench/bench_failpoints.py [N_MESSAGES]
"""

from __future__ import annotations

import sys
import tempfile
import time
import timeit
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the project on sys.path)

import anyio

from arcod.actors.messages import Message
from arcod.actors.runtime import Actor, ActorSystem, NoFailpoints, Outcome
from arcod.failpoints import Failpoints
from arcod.store.database import open_database

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
NAME = "actor.dispatcher.before_persist"


def per_call() -> None:
    def empty(name):
        return None

    stub, off = NoFailpoints(), Failpoints("")
    armed = Failpoints("actor.nothing.here=error")  # armed, but no entry matches the point
    loops = 2_000_000
    for label, fn in (("empty function", empty), ("NoFailpoints.hit", stub.hit), ("Failpoints('').hit", off.hit),
                      ("armed, point unmatched", armed.hit)):
        t = min(timeit.repeat("fn(name)", globals={"fn": fn, "name": NAME}, number=loops, repeat=5))
        print(f"  {label:<26} {t / loops * 1e9:6.1f} ns/call")


class Ping(Message, frozen=True, kw_only=True):
    n: int


class Sink(Actor):
    name = "sink"
    accepts = (Ping,)

    async def apply(self, tx, msg):
        await tx.execute("UPDATE c SET v = v + ?", (msg.n,))
        return Outcome(reply=msg.n)


async def apply_stream(failpoints, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with open_database(Path(d) / "b.db") as db:
            async with db.transaction() as tx:
                await tx.execute("CREATE TABLE c (v INTEGER)")
                await tx.execute("INSERT INTO c VALUES (0)")
            system = ActorSystem(db, [Sink()], failpoints=failpoints)
            async with anyio.create_task_group() as tg:
                await tg.start(system.run)
                t = time.perf_counter()
                for i in range(n):
                    await system.submit("sink", Ping(idem_key=f"p{i}", n=1))
                took = time.perf_counter() - t
                tg.cancel_scope.cancel()
    return took


def main() -> None:
    from arcod.log_setup import configure_logging

    configure_logging("info")  # as the daemon runs: no per-message debug lines
    print("per hit():")
    per_call()
    print(f"per applied message ({N} submits, 5 points each, best of 3):")
    makers = {"NoFailpoints": NoFailpoints, "Failpoints('') (off)": lambda: Failpoints(""),
              "armed, never fires": lambda: Failpoints("actor.nothing.here=error")}
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(3):  # interleaved, so drift in disk speed hits every variant alike
        for label, make in makers.items():
            best[label] = min(best[label], anyio.run(apply_stream, make(), N))
    for label, took in best.items():
        print(f"  {label:<26} {took / N * 1e6:7.1f} us/message")


if __name__ == "__main__":
    main()
