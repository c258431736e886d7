"""`arcod run`, `rerun`, `runs list|show|tree`, `cancel`, `logs`."""

from __future__ import annotations

import argparse
import sys

from arcod.cli.common import (
    EXIT_OK,
    FINISHED_STATES,
    RUN_STATES,
    add_closure,
    add_tags,
    asset_key,
    backfill_id,
    follow_until_finished,
    limit,
    partition_key,
    print_json,
    run_id,
    run_key,
    selection,
)


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="run a selection of assets")
    run.add_argument("--select", action="append", required=True, type=selection, metavar="EXPR",
                     help="assets to run (repeat to OR several)")
    add_closure(run)
    run.add_argument("--partition", type=partition_key, metavar="KEY", help="one partition")
    run.add_argument("--partitions", metavar="SEL", help="a partition selection: A..B, a,b,c or all")
    run.add_argument("--run-key", metavar="K", type=run_key,
                     help="idempotency key: the same key and request return the same run")
    add_tags(run, "tag the run (repeatable, each key once)")
    run.add_argument("--wait", action="store_true", help="follow the run until it finishes; exit 0 only if it succeeded")

    runs = sub.add_parser("runs", help="list, show and trace runs").add_subparsers(dest="runs_command", required=True, metavar="{list,show,tree,prune}")
    rl = runs.add_parser("list", parents=[common], help="recent runs, newest first")
    rl.add_argument("--state", type=str.upper, choices=RUN_STATES, metavar="STATE")
    rl.add_argument("--backfill", type=backfill_id, metavar="ID")
    rl.add_argument("--root", type=run_id, metavar="RUN", help="runs of this lineage group")
    rl.add_argument("--limit", type=limit, default=20, metavar="N")
    rs = runs.add_parser("show", parents=[common], help="one run with its tasks and attempts")
    rs.add_argument("run_id", type=run_id, metavar="RUN")
    rt = runs.add_parser("tree", parents=[common], help="the lineage group of a run")
    rt.add_argument("run_id", type=run_id, metavar="RUN")
    from arcod.cli.maintenance_cli import add_prune_parser

    add_prune_parser(runs, common)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("run_id", type=run_id, metavar="RUN")

    rerun = sub.add_parser("rerun", parents=[common], help="rerun part or all of a finished run")
    rerun.add_argument("run_id", type=run_id, metavar="RUN")
    kind = rerun.add_mutually_exclusive_group(required=True)
    kind.add_argument("--from-failure", action="store_true", help="exactly the tasks that did not succeed")
    kind.add_argument("--all", action="store_true", help="the whole plan again")
    kind.add_argument("--select", action="append", type=selection, metavar="EXPR",
                      help="a selection within the parent's plan (repeat to OR several)")
    add_closure(rerun)
    rerun.add_argument("--run-key", metavar="K", type=run_key)
    rerun.add_argument("--wait", action="store_true")

    logs = sub.add_parser("logs", parents=[common], help="task output of a run")
    logs.add_argument("run_id", type=run_id, metavar="RUN")
    logs.add_argument("--asset", type=asset_key, metavar="KEY")
    logs.add_argument("--partition", type=partition_key, metavar="KEY")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the run finishes")


def print_run(run: dict) -> None:
    from arcod.cli import render

    render.fields([
        ("run", run["run_id"]),
        ("state", run["state"]),
        ("run key", run["run_key"] or "-"),
        ("lineage", "-" if not run["parent_run_id"] else
         f"{run['rerun_kind']} of {run['parent_run_id']} (root {run['root_run_id']})"),
        ("backfill", "-" if not run["backfill_id"] else f"{run['backfill_id']} chunk {run['chunk_index']}"),
        ("fingerprint", run["fingerprint"][:16]),
        ("created", run["created_at"]),
        ("finished", run["finished_at"] or "-"),
    ])
    print()
    rows = []
    for t in run["tasks"]:
        note = ""
        if t["skipped_because"]:
            note = f"upstream {t['skipped_because']} failed"
        elif t["waiting_for"]:
            note = f"waits for run {t['waiting_for']} on the same partition"
        rows.append([t["asset"], t["partition"] or "-", t["state"], t["attempts"], note])
    render.table(["ASSET", "PARTITION", "STATE", "ATTEMPTS", "NOTE"], rows)




def wait_for_run(args, client, run_id: str, *, created: bool = False) -> int:
    """Follow the run until it finishes. Exit 0 only on SUCCEEDED. `created` is carried into
    the final document: `runs show` always says false (a read creates nothing), but the
    request being waited for may have created the run."""
    from arcod.cli import render
    from arcod.control import protocol as p

    def progress(run: dict) -> str:
        counts = run["counts"]
        total = sum(counts.values())
        done = sum(v for k, v in counts.items() if k in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"))
        return (f"{render.bar(done, total)} {done}/{total}  {run['state']:<9} "
                + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())))

    return follow_until_finished(args, lambda: {**client.call(p.RunsShow(run_id=run_id)), "created": created},
                                 progress, print_run)


def report_run(args, client, run: dict) -> int:
    if args.wait:
        if not args.json:
            print(("created" if run["created"] else "existing") + f" run {run['run_id']}", file=sys.stderr)
        return wait_for_run(args, client, run["run_id"], created=run["created"])
    if args.json:
        print_json(run)
        return EXIT_OK
    if run["created"]:
        n = len(run["tasks"])
        print(f"created run {run['run_id']} ({n} task{'' if n == 1 else 's'}); follow it with: arcod runs show {run['run_id']}")
    else:
        print(f"run key {run['run_key']!r} already names run {run['run_id']} ({run['state']}); nothing new was started")
    return EXIT_OK


def cmd_run(args, client) -> int:
    from arcod.control import protocol as p

    run = client.call(p.Run(
        select=args.select, upstream=args.upstream, downstream=args.downstream, partition=args.partition,
        partitions=args.partitions, run_key=args.run_key, tags=args.tags or {}))
    return report_run(args, client, run)


def cmd_rerun(args, client) -> int:
    from arcod.control import protocol as p

    kind = "from_failure" if args.from_failure else "all" if args.all else "subset"
    run = client.call(p.Rerun(run_id=args.run_id, kind=kind, select=args.select or [], upstream=args.upstream,
                              downstream=args.downstream, run_key=args.run_key))
    return report_run(args, client, run)


def cmd_runs(args, client) -> int:
    from arcod.cli import render
    from arcod.control import protocol as p

    if args.runs_command == "prune":
        from arcod.cli.maintenance_cli import cmd_prune

        return cmd_prune(args, client)
    if args.runs_command == "list":
        result = client.call(p.RunsList(state=args.state, backfill_id=args.backfill, root_run_id=args.root, limit=args.limit))
        if args.json:
            print_json(result)
            return EXIT_OK
        rows = []
        for r in result["runs"]:
            counts = r["counts"]
            total = sum(counts.values())
            ok = counts.get("SUCCEEDED", 0)
            lineage = f"{r['rerun_kind']} of {r['parent_run_id']}" if r["parent_run_id"] else ""
            if r["backfill_id"]:
                lineage = f"backfill {r['backfill_id']} #{r['chunk_index']}"
            rows.append([r["run_id"], r["state"], f"{ok}/{total}", r["created_at"][:19].replace("T", " "), lineage])
        render.table(["RUN", "STATE", "OK", "CREATED", "LINEAGE"], rows)
        return EXIT_OK
    if args.runs_command == "show":
        run = client.call(p.RunsShow(run_id=args.run_id))
        if args.json:
            print_json(run)
        else:
            print_run(run)
        return EXIT_OK
    result = client.call(p.RunsTree(run_id=args.run_id))
    if args.json:
        print_json(result)
        return EXIT_OK
    children: dict = {}
    for r in result["runs"]:
        children.setdefault(r["parent_run_id"], []).append(r)

    # The tree is drawn in the first column; the table pads it, so the other columns line up
    # whatever the depth of a run.
    rows: list[list[str]] = []

    def draw(run: dict, prefix: str, last: bool, top: bool) -> None:
        counts = run["counts"]
        branch = "" if top else ("└─ " if last else "├─ ")
        tasks = ", ".join(run["task_ids"][:6]) + (" ..." if len(run["task_ids"]) > 6 else "")
        rows.append([f"{prefix}{branch}{run['run_id']}", run["state"], run["rerun_kind"] or "root",
                     f"{counts.get('SUCCEEDED', 0)}/{sum(counts.values())}", f"[{tasks}]",
                     "<" if run["run_id"] == args.run_id else ""])
        kids = children.get(run["run_id"], [])
        for i, kid in enumerate(kids):
            draw(kid, prefix + ("" if top else ("   " if last else "│  ")), i == len(kids) - 1, False)

    for root in children.get(None, []):
        draw(root, "", True, True)
    render.table(["RUN", "STATE", "KIND", "OK", "TASKS", ""], rows)
    return EXIT_OK


def cmd_cancel(args, client) -> int:
    from arcod.control import protocol as p

    result = client.call(p.Cancel(run_id=args.run_id))
    if args.json:
        print_json(result)
    elif result["changed"]:
        print(f"run {result['run_id']} is {result['state']}")
    else:
        print(f"run {result['run_id']} is already {result['state']}; nothing changed")
    return EXIT_OK


def cmd_logs(args, client) -> int:
    import time

    from arcod.control import protocol as p

    offsets: dict[str, int] = {}
    collected: dict[str, dict] = {}
    headers_shown: set[str] = set()
    while True:
        result = client.call(p.Logs(run_id=args.run_id, asset=args.asset, partition=args.partition, offsets=offsets))
        for a in result["attempts"]:
            offsets[a["id"]] = a["offset"]
            if args.json:
                entry = collected.setdefault(a["id"], {k: a[k] for k in ("task_id", "asset", "partition", "attempt", "state")} | {"text": ""})
                entry["text"] += a["text"]
                entry["state"] = a["state"]
                continue
            if a["text"]:
                if a["id"] not in headers_shown:
                    headers_shown.add(a["id"])
                    print(f"==> {a['task_id']} attempt {a['attempt']} <==")
                sys.stdout.write(a["text"])
                sys.stdout.flush()
        if result["more"]:
            continue
        if not args.follow or result["run_state"] in FINISHED_STATES:
            break
        time.sleep(0.3)
    if args.json:
        print_json({"run_id": args.run_id, "attempts": list(collected.values())})
    return EXIT_OK



COMMANDS = {
    "run": cmd_run,
    "rerun": cmd_rerun,
    "runs": cmd_runs,
    "cancel": cmd_cancel,
    "logs": cmd_logs,
}
