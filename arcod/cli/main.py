"""The `arcod` command line.

argparse, not cyclopts: `arcod status` must answer in well under 200 ms end to end, and
cyclopts costs ~130 ms to import on the reference machine, before any work (see
docs/decisions.md). Every client command is a blocking request over the Unix socket, so no
event loop is needed outside `arcod serve`. Imports are deferred to the command that needs
them for the same reason.

Exit status (SPEC §7): 0 ok; 1 refused, or a waited-for run/backfill that did not succeed;
2 usage error; 3 daemon not reachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from arcod.cli import backfill_cli, partitions_cli, runs_cli
from arcod.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_closure,
    fail,
    print_json,
)


class UsageError(Exception):
    """A command line that cannot be turned into a request (exit status 2)."""


# ── socket discovery ────────────────────────────────────────────────────────

def socket_path(args: argparse.Namespace) -> Path:
    """--socket, else $ARCOD_SOCKET, else the config's state_dir (--config, $ARCOD_CONFIG,
    ./arcod.toml, ./config/arcod.toml). Reads only `state_dir` to stay fast."""
    if getattr(args, "socket", None):
        return Path(args.socket)
    env = os.environ.get("ARCOD_SOCKET")
    if env:
        return Path(env)
    config = args.config or os.environ.get("ARCOD_CONFIG")
    if not config:
        for candidate in ("arcod.toml", "config/arcod.toml"):
            if Path(candidate).is_file():
                config = candidate
                break
    if not config:
        raise UsageError(
            "cannot find the daemon's socket: pass --socket or --config, set ARCOD_SOCKET or "
            "ARCOD_CONFIG, or run from a directory with arcod.toml or config/arcod.toml"
        )
    import tomllib

    path = Path(config).resolve()
    try:
        with path.open("rb") as f:
            state_dir = tomllib.load(f).get("state_dir", ".arcod")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    if not isinstance(state_dir, str):
        raise UsageError(f"{path}: state_dir must be a string")
    return (path.parent / state_dir).resolve() / "arcod.sock"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--socket", help="control socket path (default: from the config)")
    common.add_argument("--config", help="arcod.toml path (default: $ARCOD_CONFIG, ./arcod.toml, ./config/arcod.toml)")

    parser = argparse.ArgumentParser(prog="arcod", description="arcod: selections, reruns and backfills over an asset graph.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="arcod.toml path")
    serve.add_argument("--backend", choices=("asyncio", "trio"), default=os.environ.get("ARCOD_BACKEND", "asyncio"))

    sub.add_parser("status", parents=[common], help="daemon status")
    sub.add_parser("reload", parents=[common], help="reload the definition files")

    assets = sub.add_parser("assets", help="list or show assets").add_subparsers(dest="assets_command", required=True, metavar="{list,show}")
    al = assets.add_parser("list", parents=[common], help="list assets")
    al.add_argument("--select", help="only the assets of this selection")
    ash = assets.add_parser("show", parents=[common], help="show one asset")
    ash.add_argument("key")

    sel = sub.add_parser("select", parents=[common], help="resolve a selection without running it")
    sel.add_argument("expr", nargs="+", help="selection expression(s), OR-ed")
    sel.add_argument("--explain", action="store_true", help="say why each asset is in")
    add_closure(sel)

    runs_cli.add_parsers(sub, common)
    partitions_cli.add_parsers(sub, common)
    backfill_cli.add_parsers(sub, common)
    return parser


# ── output ──────────────────────────────────────────────────────────────────

# ── commands ────────────────────────────────────────────────────────────────

def cmd_serve(args: argparse.Namespace) -> int:
    from arcod.serve import serve

    return serve(args.config, args.backend)


def cmd_status(args, client) -> int:
    from arcod.control import protocol as p
    from arcod.cli import render

    result = client.call(p.Status())
    if args.json:
        print_json(result)
        return EXIT_OK
    render.fields([
        ("daemon", f"arcod {result['version']} pid {result['pid']}, up {result['uptime_s']:.0f}s"),
        ("config", result["config"]),
        ("socket", result["socket"]),
        ("code version", result["code_version"]),
        ("assets", result["assets"]),
        *[(f"runs {k.lower()}", v) for k, v in sorted(result.get("runs", {}).items())],
    ])
    return EXIT_OK


def cmd_reload(args, client) -> int:
    from arcod.control import protocol as p

    result = client.call(p.Reload())
    if args.json:
        print_json(result)
    elif result["changed"]:
        print(f"reloaded: code version {result['previous_code_version']} -> {result['code_version']}, {result['assets']} assets")
    else:
        print(f"reloaded: no change (code version {result['code_version']}, {result['assets']} assets)")
    return EXIT_OK


def cmd_assets(args, client) -> int:
    from arcod.control import protocol as p
    from arcod.cli import render

    if args.assets_command == "list":
        result = client.call(p.AssetsList(select=args.select))
        if args.json:
            print_json(result)
            return EXIT_OK
        render.table(
            ["KEY", "GROUP", "PARTITIONS", "DEPS"],
            [[a["key"], a["group"], a["partitions"] or "-", ", ".join(a["deps"]) or "-"] for a in result["assets"]],
        )
        return EXIT_OK
    result = client.call(p.AssetsShow(key=args.key))
    if args.json:
        print_json(result)
        return EXIT_OK
    command = result["command"]
    render.fields([
        ("key", result["key"]),
        ("group", result["group"]),
        ("partitions", result["partitions"] or "-"),
        ("deps", ", ".join(result["deps"]) or "-"),
        ("children", ", ".join(result["children"]) or "-"),
        ("runs", " ".join(command) if isinstance(command, list) else command or f"python {result['python']}"),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(result["tags"].items())) or "-"),
        ("kinds", ", ".join(result["kinds"]) or "-"),
        ("owners", ", ".join(result["owners"]) or "-"),
        ("retries", f"max {result['retries']['max']}, delay {result['retries']['delay_s']}s, backoff x{result['retries']['backoff']}"),
        ("timeout", f"{result['timeout_s']}s" if result["timeout_s"] else "-"),
        ("defined in", result["source_file"]),
    ])
    return EXIT_OK


def cmd_select(args, client) -> int:
    from arcod.control import protocol as p
    from arcod.cli import render

    result = client.call(p.Select(select=args.expr, upstream=args.upstream, downstream=args.downstream))
    if args.json:
        print_json(result)
        return EXIT_OK
    if args.explain:
        render.table(["ASSET", "WHY"], [[e["key"], e["text"]] for e in result["explain"]])
    else:
        for key in result["keys"]:
            print(key)
    return EXIT_OK


COMMANDS = {
    **runs_cli.COMMANDS,
    **partitions_cli.COMMANDS,
    **backfill_cli.COMMANDS,
    "status": cmd_status,
    "reload": cmd_reload,
    "assets": cmd_assets,
    "select": cmd_select,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    from arcod.control.client import Client, DaemonUnreachable, RequestRefused

    try:
        path = socket_path(args)
        with Client(path) as client:
            return COMMANDS[args.command](args, client)
    except UsageError as exc:
        fail(args, "usage", str(exc))
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        fail(args, "daemon_unreachable", str(exc))
        return EXIT_UNREACHABLE
    except RequestRefused as exc:
        err = exc.error
        if args.json:
            print_json({"error": {"code": err.code, "message": err.message, "details": err.details}})
        else:
            print(f"arcod: {err.message}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
