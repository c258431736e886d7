"""`arcod backfill create|list|show|chunks|partitions|pause|resume|cancel|retry-failed|watch`."""

from __future__ import annotations

import argparse

from arcod.cli.common import (
    EXIT_OK,
    add_closure,
    backfill_id,
    chunk_size,
    follow_until_finished,
    limit,
    max_concurrency,
    page_offset,
    print_json,
    request_id,
    selection,
    state_version,
)

BACKFILL_STATES = ("RUNNING", "PAUSED", "CANCELING", "CANCELED", "SUCCEEDED", "FAILED")
CHUNK_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    bf = sub.add_parser("backfill", help="backfill assets over partitions, in chunks").add_subparsers(
        dest="backfill_command", required=True,
        metavar="{create,list,show,chunks,partitions,pause,resume,cancel,retry-failed,watch}")

    c = bf.add_parser("create", parents=[common], help="create a backfill (or --dry-run it)")
    c.add_argument("--select", action="append", required=True, type=selection, metavar="EXPR",
                   help="assets to backfill (repeat to OR several); all must share one partitions definition")
    add_closure(c)
    c.add_argument("--partitions", required=True, metavar="SEL", help="partition selection: A..B, a,b,c or all")
    c.add_argument("--chunk-size", type=chunk_size, metavar="N", help="partitions per chunk run (default 10)")
    c.add_argument("--max-concurrency", type=max_concurrency, metavar="N",
                   help="chunk runs of this backfill active at once (default 4)")
    c.add_argument("--newest-first", action="store_true", help="chunk from the newest partition backwards")
    c.add_argument("--reprocess", choices=("all", "missing", "failed"), default="all",
                   help="all (default); missing: skip what ran before; failed: missing + last attempt failed")
    c.add_argument("--request-id", type=request_id, metavar="ID", help="idempotency key: the same id and request return the same backfill")
    c.add_argument("--dry-run", action="store_true", help="show counts, chunks and decisions; create nothing")

    ls = bf.add_parser("list", parents=[common], help="backfills, newest first")
    ls.add_argument("--state", type=str.upper, choices=BACKFILL_STATES, metavar="STATE")
    ls.add_argument("--limit", type=limit, default=50, metavar="N")

    sh = bf.add_parser("show", parents=[common], help="one backfill: counts, progress, transition log")
    sh.add_argument("backfill_id", type=backfill_id, metavar="ID")

    for name, what in (("chunks", "chunks with their runs"), ("partitions", "partitions with their states")):
        sp = bf.add_parser(name, parents=[common], help=f"a backfill's {what}")
        sp.add_argument("backfill_id", type=backfill_id, metavar="ID")
        sp.add_argument("--state", type=str.upper, choices=CHUNK_STATES, metavar="STATE")
        sp.add_argument("--offset", type=page_offset, default=0, metavar="N")
        sp.add_argument("--limit", type=limit, default=100, metavar="N")

    for action, what in (("pause", "start no new chunk runs; active ones finish"),
                         ("resume", "continue at the next unplanned chunk"),
                         ("cancel", "start no new chunk runs and cancel the active ones")):
        tp = bf.add_parser(action, parents=[common], help=what)
        tp.add_argument("backfill_id", type=backfill_id, metavar="ID")
        tp.add_argument("--expect-version", type=state_version, metavar="N",
                        help="act only if the backfill is still at this state_version (versions start at 1)")
        tp.add_argument("--request-id", type=request_id, metavar="ID", help="repeating the same request id replays its answer")

    rf = bf.add_parser("retry-failed", parents=[common], help="a child backfill over what did not succeed")
    rf.add_argument("backfill_id", type=backfill_id, metavar="ID")
    rf.add_argument("--request-id", type=request_id, metavar="ID", help="a new id makes a new child; the same one returns it")

    w = bf.add_parser("watch", parents=[common], help="live progress until the backfill finishes")
    w.add_argument("backfill_id", type=backfill_id, metavar="ID")


# ── output ──────────────────────────────────────────────────────────────────


def per_chunk(partitions_total: int, chunks_total: int, chunk_size: int) -> str:
    """What a chunk holds: `5 partitions each`, `5 partitions each, the last 2`, or for one
    chunk just its partitions (`3 partitions`)."""
    from arcod.cli.render import plural

    if chunks_total == 1:
        return plural(partitions_total, "partition")
    text = f"{plural(chunk_size, 'partition')} each"
    last = partitions_total - (chunks_total - 1) * chunk_size
    if chunks_total > 1 and 0 < last < chunk_size:
        text += f", the last {last:,}"
    return text


def _counts_line(counts: dict) -> str:
    return ", ".join(f"{k.lower()} {v:,}" for k, v in counts.items() if v)


def print_backfill(bf: dict) -> None:
    from arcod.cli import render

    prog = bf.get("progress") or {}
    lineage = "-"
    if bf["parent_backfill_id"]:
        lineage = f"retry-failed of {bf['parent_backfill_id']} (root {bf['root_backfill_id']})"
    rate = prog.get("rate_per_s")
    eta = prog.get("eta_s")
    render.fields([
        ("backfill", bf["backfill_id"]),
        ("state", f"{bf['state']} (version {bf['state_version']})"),
        ("assets", ", ".join(bf["assets"])),
        ("partitions", f"{bf['partitions_total']:,} of {bf['definition']!r}: {bf['target']}"
                       + (", newest first" if bf["newest_first"] else "")
                       + ("" if bf["reprocess"] == "all" else f", reprocess {bf['reprocess']}")),
        ("chunks", f"{bf['chunks_total']:,} ({per_chunk(bf['partitions_total'], bf['chunks_total'], bf['chunk_size'])}), "
                   f"at most {bf['max_concurrency']} at once"),
        ("lineage", lineage),
        ("progress", f"{prog['fraction_succeeded'] * 100:.1f}% succeeded, {prog['fraction_finished'] * 100:.1f}% "
                     f"finished ({prog['partitions_succeeded']:,} succeeded, {prog['partitions_finished']:,} finished "
                     f"of {bf['partitions_total']:,})" if prog else "-"),
        ("rate", f"{rate:,.2f} partitions/s" if rate else "-"),
        ("eta", f"{eta:,.0f}s" if eta is not None else "-"),
        ("partitions by state", _counts_line(bf["counts"]["partitions"]) or "-"),
        ("chunks by state", _counts_line(bf["counts"]["chunks"]) or "-"),
        ("created", bf["created_at"]),
        ("finished", bf["finished_at"] or "-"),
    ])
    if bf.get("transitions"):
        print()
        render.table(["VERSION", "FROM", "TO", "AT", "REQUEST", "WHY"], [
            [t["version"], t["from_state"] or "-", t["to_state"], t["at"][:23].replace("T", " "),
             t["request_id"] or "-", t["reason"]] for t in bf["transitions"]])


def print_dry_run(result: dict) -> None:
    """Counts for all, one line per listed chunk, and the partitions of those chunks that are
    not run in full, with the reason (the JSON has every decision)."""
    from arcod.cli import render

    counts = result["counts"]
    total, chunks = result["partitions_total"], result["chunks_total"]
    print(f"dry run: nothing was created. {render.plural(total, 'partition')} of {result['definition']!r} "
          f"({result['partitions']}) x {render.plural(len(result['assets']), 'asset')} in "
          f"{render.plural(chunks, 'chunk')} ({per_chunk(total, chunks, result['chunk_size'])}), "
          f"at most {result['max_concurrency']} at once"
          + (", newest first" if result["newest_first"] else ""))
    print(f"reprocess {result['reprocess']}: {render.plural(counts['tasks']['run'], 'task')} to run, "
          f"{counts['tasks']['skip']:,} skipped ({render.plural(counts['partitions']['skip'], 'partition')} entirely)"
          + "".join(f"; {n:,} {reason}" for reason, n in counts["skip_reasons"].items()))
    print()
    rows, notes = [], []
    for chunk in result["chunks"]:
        tasks = [t for e in chunk["partitions"] for t in e["tasks"]]
        run = sum(1 for t in tasks if t["decision"] == "run")
        keys = chunk["keys"]
        rows.append([chunk["chunk_index"], f"{keys[0]}..{keys[-1]}" if len(keys) > 1 else keys[0], len(keys),
                     run, len(tasks) - run])
        notes.extend([e["partition"], e["decision"], e["reason"]] for e in chunk["partitions"] if e["decision"] != "run")
    render.table(["CHUNK", "PARTITIONS", "N", "TASKS", "SKIPPED"], rows)
    if result["chunks_total"] > len(result["chunks"]):
        print(f"... and {render.plural(result['chunks_total'] - len(result['chunks']), 'more chunk')}")
    if notes:
        print()
        render.table(["PARTITION", "DECISION", "REASON"], notes[:10])
        if len(notes) > 10:
            print(f"... and {len(notes) - 10} more in these chunks (--json lists every decision)")


# ── commands ────────────────────────────────────────────────────────────────


def cmd_backfill(args, client) -> int:
    from arcod.control import protocol as p

    command = args.backfill_command
    if command == "create":
        result = client.call(p.BackfillCreate(
            select=args.select, upstream=args.upstream, downstream=args.downstream, partitions=args.partitions,
            chunk_size=args.chunk_size, max_concurrency=args.max_concurrency, newest_first=args.newest_first,
            reprocess=args.reprocess, request_id=args.request_id, dry_run=args.dry_run))
        if args.json:
            print_json(result)
        elif args.dry_run:
            print_dry_run(result)
        else:
            _report_created(result, "created")
        return EXIT_OK
    if command == "retry-failed":
        result = client.call(p.BackfillRetryFailed(backfill_id=args.backfill_id, request_id=args.request_id))
        if args.json:
            print_json(result)
        else:
            _report_created(result, f"created retry of {result['parent_backfill_id']}:")
        return EXIT_OK
    if command in ("pause", "resume", "cancel"):
        result = client.call(p.BackfillTransition(backfill_id=args.backfill_id, action=command,
                                                  expect_version=args.expect_version, request_id=args.request_id))
        if args.json:
            print_json(result)
        elif result["changed"]:
            print(f"backfill {result['backfill_id']}: {result['previous_state']} -> {result['state']} "
                  f"(version {result['state_version']})")
        else:
            print(f"backfill {result['backfill_id']} is already {result['state']} "
                  f"(version {result['state_version']}); nothing changed")
        return EXIT_OK
    if command == "list":
        return _list(args, client)
    if command == "show":
        result = client.call(p.BackfillShow(backfill_id=args.backfill_id))
        if args.json:
            print_json(result)
        else:
            print_backfill(result)
        return EXIT_OK
    if command == "chunks":
        return _chunks(args, client)
    if command == "partitions":
        return _partitions(args, client)
    return watch(args, client, args.backfill_id)


def _report_created(bf: dict, verb: str) -> None:
    from arcod.cli.render import plural

    if bf["created"]:
        total, chunks = bf["partitions_total"], bf["chunks_total"]
        print(f"{verb} backfill {bf['backfill_id']}: {plural(total, 'partition')} in {plural(chunks, 'chunk')} "
              f"({per_chunk(total, chunks, bf['chunk_size'])}), at most {bf['max_concurrency']} at once; "
              f"follow it with: arcod backfill watch {bf['backfill_id']}")
    elif bf["parent_backfill_id"]:
        print(f"backfill {bf['backfill_id']} ({bf['state']}) is already the retry of {bf['parent_backfill_id']}"
              + (f" for request id {bf['request_id']!r}" if bf["request_id"] else "")
              + "; nothing new was created (a new --request-id makes another)")
    else:
        print(f"request id {bf['request_id']!r} already names backfill {bf['backfill_id']} ({bf['state']}); "
              "nothing new was created")


def _list(args, client) -> int:
    from arcod.cli import render
    from arcod.control import protocol as p

    result = client.call(p.BackfillList(state=args.state, limit=args.limit))
    if args.json:
        print_json(result)
        return EXIT_OK
    rows = []
    for bf in result["backfills"]:
        prog, total = bf["progress"], bf["partitions_total"]
        rows.append([bf["backfill_id"], bf["state"], bf["state_version"],
                     f"{prog['partitions_succeeded']:,}/{total:,}", f"{prog['partitions_finished']:,}/{total:,}",
                     f"{bf['counts']['chunks']['RUNNING']}/{bf['max_concurrency']}", ", ".join(bf["assets"])[:40],
                     bf["created_at"][:19].replace("T", " "),
                     f"retry of {bf['parent_backfill_id']}" if bf["parent_backfill_id"] else ""])
    render.table(["BACKFILL", "STATE", "V", "SUCCEEDED", "FINISHED", "ACTIVE", "ASSETS", "CREATED", "LINEAGE"], rows)
    return EXIT_OK


def _chunks(args, client) -> int:
    from arcod.cli import render
    from arcod.control import protocol as p

    result = client.call(p.BackfillChunks(backfill_id=args.backfill_id, state=args.state, offset=args.offset,
                                          limit=args.limit))
    if args.json:
        print_json(result)
        return EXIT_OK
    render.table(["CHUNK", "STATE", "RUN", "RUN STATE", "PARTITIONS", "FIRST", "LAST"], [
        [c["chunk_index"], c["state"], c["run_id"] or "-", c["run_state"] or "-", c["partitions"],
         c["first_partition"], c["last_partition"]] for c in result["chunks"]])
    print(f"{result['chunks_total']:,} chunks: {_counts_line(result['counts'])}")
    return EXIT_OK


def _partitions(args, client) -> int:
    from arcod.cli import render
    from arcod.control import protocol as p

    result = client.call(p.BackfillPartitions(backfill_id=args.backfill_id, state=args.state, offset=args.offset,
                                              limit=args.limit))
    if args.json:
        print_json(result)
        return EXIT_OK
    render.table(["PARTITION", "STATE", "CHUNK", "TASKS"], [
        [e["partition"], e["state"], e["chunk_index"],
         ", ".join(f"{a} {s.lower() if s else 'pending'}" for a, s in sorted(e["tasks"].items()))]
        for e in result["partitions"]])
    print(f"{result['partitions_total']:,} partitions: {_counts_line(result['counts'])}")
    return EXIT_OK


def watch(args, client, backfill_id: str) -> int:
    """Follow `backfill show` until the backfill finishes; a live bar on a terminal (stderr).
    Exit 0 only if it SUCCEEDED. A PAUSED backfill is waited for: it finishes after resume."""
    from arcod.cli import render
    from arcod.control import protocol as p

    def progress(bf: dict) -> str:
        parts = bf["counts"]["partitions"]
        done = bf["progress"]["partitions_finished"]
        rate = bf["progress"]["rate_per_s"]
        eta = bf["progress"]["eta_s"]
        return (f"{render.bar(done, bf['partitions_total'])} {done:,}/{bf['partitions_total']:,} "
                f"{bf['state']:<9} ok {parts['SUCCEEDED']:,} failed {parts['FAILED']:,}"
                + (f" canceled {parts['CANCELED']:,}" if parts.get("CANCELED") else "")
                + (f"  {rate:,.1f}/s" if rate else "") + (f"  eta {eta:,.0f}s" if eta is not None else ""))

    return follow_until_finished(args, lambda: client.call(p.BackfillShow(backfill_id=backfill_id)), progress,
                                 print_backfill)


COMMANDS = {"backfill": cmd_backfill}
