"""Reading a project from disk: `arcod.toml` and the definition files it names.

This is the I/O half of loading; `arcod.core.definitions` validates. Paths in `arcod.toml`
are relative to the file itself, so a project works from whatever directory the daemon was
started in.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from arcod.core import errors
from arcod.core.definitions import Definitions, build_definitions
from arcod.core.errors import ArcodError

CONFIG_ENV = "ARCOD_CONFIG"
SOCKET_ENV = "ARCOD_SOCKET"


class SettingsSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`arcod.toml` as written."""

    state_dir: str = ".arcod"
    definitions: list[str] = []
    max_concurrent_runs: int = 4
    max_tasks_per_run: int = 4
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    failpoints: str = ""
    failpoints_seed: str = ""
    term_grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    # Finished runs older than this many days are pruned once a day (0: never; see
    # `arcod runs prune` and arcod/store/retention.py).
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 0
    # Control socket limits (arcod/control/server.py): connections open at once, and how long
    # a connection may stay silent (waiting for its next frame, or for us to send) before it
    # is closed.
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 128
    client_idle_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # A task whose log grows past this is stopped and fails (0: no limit): a flooding task must
    # not fill the disk that holds the database.
    max_log_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1 << 30


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved daemon settings, every path absolute."""

    config_path: Path
    project_dir: Path
    state_dir: Path
    definition_files: tuple[Path, ...]
    max_concurrent_runs: int
    max_tasks_per_run: int
    log_level: str
    failpoints: str
    failpoints_seed: str
    term_grace_s: float
    retention_days: int = 0
    max_connections: int = 128
    client_idle_timeout_s: float = 300.0
    max_log_bytes: int = 1 << 30

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "arcod.sock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "arcod.db"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ArcodError(
            errors.DEFINITIONS_ERROR,
            f"{path}: file not found",
            {"file": str(path)},
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ArcodError(
            errors.DEFINITIONS_ERROR,
            f"{path}: not valid TOML: {exc}",
            {"file": str(path)},
        ) from None
    except OSError as exc:
        raise ArcodError(
            errors.DEFINITIONS_ERROR, f"{path}: cannot read: {exc.strerror}", {"file": str(path)}
        ) from None


def load_settings(config_path: str | os.PathLike[str]) -> Settings:
    path = Path(config_path).resolve()
    raw = _read_toml(path)
    try:
        spec = msgspec.convert(raw, SettingsSpec, strict=True)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        if "unknown field" in msg:
            bad = msg.split("`")[1] if "`" in msg else ""
            near = difflib.get_close_matches(bad, list(SettingsSpec.__struct_fields__), n=1)
            if near:
                msg += f" (did you mean `{near[0]}`?)"
            else:
                msg += f"; the known settings are {', '.join(SettingsSpec.__struct_fields__)}"
        elif "Invalid enum value" in msg and "$.log_level" in msg:
            msg += "; expected one of debug, info, warning, error"
        raise ArcodError(errors.DEFINITIONS_ERROR, f"{path}: {msg}", {"file": str(path)}) from None
    if spec.max_concurrent_runs < 1 or spec.max_tasks_per_run < 1:
        raise ArcodError(
            errors.DEFINITIONS_ERROR,
            f"{path}: max_concurrent_runs and max_tasks_per_run must be at least 1",
            {"file": str(path)},
        )
    if not spec.definitions:
        raise ArcodError(
            errors.DEFINITIONS_ERROR,
            f"{path}: `definitions` is empty; list the definition files, e.g. definitions = [\"assets.toml\"]",
            {"file": str(path)},
        )
    base = path.parent
    return Settings(
        config_path=path,
        project_dir=base,
        state_dir=(base / spec.state_dir).resolve(),
        definition_files=tuple((base / d).resolve() for d in spec.definitions),
        max_concurrent_runs=spec.max_concurrent_runs,
        max_tasks_per_run=spec.max_tasks_per_run,
        log_level=spec.log_level,
        failpoints=spec.failpoints,
        failpoints_seed=spec.failpoints_seed,
        term_grace_s=spec.term_grace_s,
        retention_days=spec.retention_days,
        max_connections=spec.max_connections,
        client_idle_timeout_s=spec.client_idle_timeout_s,
        max_log_bytes=spec.max_log_bytes,
    )


def load_definitions(settings: Settings, dynamic_keys: Mapping[str, list[str]] | None = None) -> Definitions:
    """Read and validate every definition file named by the settings."""
    sources = []
    for file in settings.definition_files:
        try:
            shown = str(file.relative_to(settings.project_dir))
        except ValueError:
            shown = str(file)
        sources.append((shown, _read_toml(file)))
    return build_definitions(sources, dynamic_keys=dynamic_keys or {})


def find_config(explicit: str | None) -> Path | None:
    """The config a client means: --config, else $ARCOD_CONFIG, else ./arcod.toml, else ./config/arcod.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    for candidate in (Path("arcod.toml"), Path("config/arcod.toml")):
        if candidate.is_file():
            return candidate
    return None
