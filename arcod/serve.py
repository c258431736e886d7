"""`arcod serve`: load the settings, configure logging, run the daemon until told to stop."""

from __future__ import annotations

import sys

import anyio

from arcod.config import find_config, load_settings
from arcod.core.errors import ArcodError
from arcod.log_setup import configure_logging


def serve(config: str | None, backend: str = "asyncio") -> int:
    path = find_config(config)
    if path is None:
        print("arcod: no config found: pass --config PATH, set ARCOD_CONFIG, or run where "
              "arcod.toml or config/arcod.toml exists", file=sys.stderr)
        return 2
    try:
        settings = load_settings(path)
    except ArcodError as exc:
        print(f"arcod: {exc.message}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    from arcod.daemon import Daemon, StartupError

    daemon = Daemon(settings)
    try:
        anyio.run(daemon.run, backend=backend)
    except StartupError as exc:
        print(f"arcod: {exc}", file=sys.stderr)
        return 1
    except ArcodError as exc:
        print(f"arcod: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
