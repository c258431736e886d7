"""The asset definitions model, and its validation from parsed TOML tables.

Loading a project is split in two: `arcod.config` reads files (I/O), this module turns the
parsed tables into validated, immutable structs (pure). Every error names the file and the
asset (or partitions definition) it is about, because an operator with thirty definition
files needs to know where to look, not just what is wrong.

`code_version` is a content hash of the canonical form of every table, so reformatting a
file does not change it but any change of meaning does. A run records the `code_version` it
was planned with and keeps it for its whole life.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from arcod.core import errors
from arcod.core.asset_keys import validate_asset_key
from arcod.core.canonical import fingerprint
from arcod.core.errors import ArcodError
from arcod.core.graph import AssetGraph
from arcod.core.retry import RetryPolicy
from arcod.core.tags import MAX_TAGS, tag_problem


class Dependency(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An edge to an upstream asset; `mapping` is the partition mapping (identity if None)."""

    asset: str
    mapping: dict[str, Any] | None = None


class AssetSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An `[assets."KEY"]` table exactly as written (deps may be strings or tables)."""

    deps: list[str | Dependency] = []
    partitions: str | None = None
    command: list[str] | str | None = None
    python: str | None = None
    group: str = "default"
    tags: dict[str, str] = {}
    kinds: list[str] = []
    owners: list[str] = []
    retries: RetryPolicy = RetryPolicy()
    timeout_s: float | None = None
    description: str | None = None


class AssetDef(msgspec.Struct, frozen=True, kw_only=True):
    """A validated asset: what to run, what it needs, and how it is labelled for selection."""

    key: str
    source_file: str
    deps: tuple[Dependency, ...] = ()
    partitions: str | None = None
    command: tuple[str, ...] | str | None = None
    python: str | None = None
    group: str = "default"
    tags: dict[str, str] = {}
    kinds: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    retries: RetryPolicy = RetryPolicy()
    timeout_s: float | None = None
    description: str | None = None

    @property
    def dep_keys(self) -> tuple[str, ...]:
        return tuple(d.asset for d in self.deps)


class Definitions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one load of the definition files produced."""

    assets: dict[str, AssetDef]
    partitions: dict[str, Any]  # name -> PartitionsDefinition (arcod.core.partitions)
    code_version: str
    graph: AssetGraph

    def asset(self, key: str) -> AssetDef:
        """The asset named `key`: `invalid_key` (saying what a key looks like) if `key` could
        never name an asset, `unknown_assets` (with near names) if it is well-formed but not
        defined."""
        asset = self.assets.get(key)
        if asset is not None:
            return asset
        validate_asset_key(key)
        raise unknown_assets_error([key], self.assets)


def unknown_assets_error(keys: Sequence[str], known: Mapping[str, Any]) -> ArcodError:
    """One error that lists every unknown key, each with the nearest known names."""
    keys = sorted(set(keys))
    hints = []
    for key in keys:
        near = difflib.get_close_matches(key, list(known), n=3)
        if near:
            hints.append(f"{key} (did you mean {', '.join(near)}?)")
        else:
            hints.append(key)
    return ArcodError(
        errors.UNKNOWN_ASSETS,
        f"unknown asset key{'s' if len(keys) > 1 else ''}: {'; '.join(hints)}. "
        "Run `arcod assets list` to see the defined assets.",
        {"keys": keys},
    )


def _definitions_error(file: str, message: str, **details: Any) -> ArcodError:
    return ArcodError(errors.DEFINITIONS_ERROR, f"{file}: {message}", {"file": file, **details})


def _suggest_field(msg: str, valid: Sequence[str]) -> str:
    """Add 'did you mean' to msgspec's unknown-field message.

    `valid` are the asset's fields; an unknown field inside a nested table (msgspec ends the
    message with "- at `$.retries`") is matched against that table's fields instead.
    """
    if "unknown field" not in msg:
        return msg
    try:
        bad = msg.split("`")[1]
    except IndexError:
        return msg
    nested = msg.rpartition("- at `$.")[2].rstrip("`").split("[")[0] if "- at `$." in msg else ""
    valid = _NESTED_FIELDS.get(nested, valid)
    near = difflib.get_close_matches(bad, list(valid), n=1)
    return f"{msg} (did you mean `{near[0]}`?)" if near else f"{msg} (valid fields: {', '.join(valid)})"


_ASSET_FIELDS = tuple(AssetSpec.__struct_fields__)
_NESTED_FIELDS = {"retries": tuple(RetryPolicy.__struct_fields__), "deps": tuple(Dependency.__struct_fields__)}
_TOP_LEVEL = ("assets", "partitions")


def build_definitions(
    sources: Sequence[tuple[str, Mapping[str, Any]]],
    dynamic_keys: Mapping[str, Sequence[str]] | None = None,
) -> Definitions:
    """Validate parsed definition files, given as (file name, parsed TOML table) pairs.

    `dynamic_keys` are the stored keys of dynamic partitions definitions (they live in the
    database, not in the files), in insertion order.
    """

    specs: dict[str, tuple[str, AssetSpec]] = {}
    partition_tables: dict[str, Mapping[str, Any]] = {}
    partition_files: dict[str, str] = {}
    for file, table in sources:
        for section in table:
            if section not in _TOP_LEVEL:
                near = difflib.get_close_matches(section, _TOP_LEVEL, n=1)
                hint = f" (did you mean [{near[0]}]?)" if near else ""
                raise _definitions_error(
                    file,
                    f"unknown section [{section}]{hint}; a definition file holds "
                    "[partitions.NAME] and [assets.\"KEY\"] tables",
                    section=section,
                )
        for name, ptable in table.get("partitions", {}).items():
            if name in partition_tables:
                raise _definitions_error(
                    file,
                    f"partitions definition {name!r} is already defined in {partition_files[name]}",
                    partitions=name,
                )
            if not isinstance(ptable, Mapping):
                raise _definitions_error(file, f"[partitions.{name}] must be a table", partitions=name)
            partition_tables[name] = ptable
            partition_files[name] = file
        for key, atable in table.get("assets", {}).items():
            try:
                validate_asset_key(key)
            except ArcodError as exc:
                raise _definitions_error(file, exc.message, asset=key) from None
            if key in specs:
                raise _definitions_error(
                    file, f"asset {key!r} is already defined in {specs[key][0]}", asset=key
                )
            try:
                spec = msgspec.convert(atable, AssetSpec, strict=True)
            except msgspec.ValidationError as exc:
                raise _definitions_error(
                    file,
                    f"asset {key!r}: {_suggest_field(str(exc), _ASSET_FIELDS)}",
                    asset=key,
                ) from None
            specs[key] = (file, spec)

    partitions = _parse_partitions(partition_tables, partition_files, dynamic_keys or {})
    assets: dict[str, AssetDef] = {}
    for key, (file, spec) in sorted(specs.items()):
        assets[key] = _validate_asset(key, file, spec, specs, partitions)

    graph = AssetGraph.from_deps({k: a.dep_keys for k, a in assets.items()})
    cycle = graph.find_cycle()
    if cycle:
        first = assets[cycle[0]]
        raise _definitions_error(
            first.source_file,
            f"dependency cycle: {' -> '.join(cycle)}; remove one of these edges",
            asset=cycle[0],
            cycle=cycle,
        )
    code_version = fingerprint(
        {"sources": sorted([[file, _jsonable(table)] for file, table in sources])}
    )[:16]
    return Definitions(assets=assets, partitions=partitions, code_version=code_version, graph=graph)


def _parse_partitions(
    tables: Mapping[str, Mapping[str, Any]],
    files: Mapping[str, str],
    dynamic_keys: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """Every partitions definition, from all files: plain ones first, then multi definitions,
    whose dimensions may name any plain one wherever it was defined; then the stored keys of
    dynamic definitions (dimensions included) are bound."""
    from arcod.core.partitions import bind_dynamic_keys, parse_definition

    parsed: dict[str, Any] = {}
    multis = [name for name, table in tables.items() if table.get("kind") == "multi"]
    for name in [n for n in tables if n not in multis] + multis:
        try:
            parsed[name] = parse_definition(name, tables[name], parsed)
        except ArcodError as exc:
            raise _definitions_error(files[name], exc.message, partitions=name) from None
    try:
        return {name: bind_dynamic_keys(defn, dynamic_keys) for name, defn in parsed.items()}
    except ArcodError as exc:
        raise ArcodError(errors.DEFINITIONS_ERROR, f"stored dynamic partition keys: {exc.message}", exc.details) from None


def _validate_asset(
    key: str,
    file: str,
    spec: AssetSpec,
    specs: Mapping[str, tuple[str, AssetSpec]],
    partitions: Mapping[str, Any],
) -> AssetDef:
    def fail(message: str) -> ArcodError:
        return _definitions_error(file, f"asset {key!r}: {message}", asset=key)

    if (spec.command is None) == (spec.python is None):
        raise fail("give exactly one of `command` (argv list or shell string) or `python` (\"module:function\")")
    if isinstance(spec.command, list) and not spec.command:
        raise fail("`command` is an empty list; give the program and its arguments")
    if isinstance(spec.command, str) and not spec.command.strip():
        raise fail("`command` is an empty string")
    if spec.python is not None:
        module, _, func = spec.python.partition(":")
        if not module or not func:
            raise fail(f"`python` must look like \"package.module:function\", got {spec.python!r}")
    if spec.partitions is not None and spec.partitions not in partitions:
        known = ", ".join(sorted(partitions)) or "none are defined"
        raise fail(f"unknown partitions definition {spec.partitions!r} (defined: {known})")
    if spec.timeout_s is not None and spec.timeout_s <= 0:
        raise fail("`timeout_s` must be a positive number of seconds")
    if spec.retries.max < 0 or spec.retries.delay_s < 0 or spec.retries.backoff < 1:
        raise fail("`retries` needs max >= 0, delay_s >= 0 and backoff >= 1")
    if len(spec.tags) > MAX_TAGS:
        raise fail(f"{len(spec.tags)} tags; at most {MAX_TAGS} are allowed")
    for tag_key, tag_value in spec.tags.items():
        problem = tag_problem(tag_key, tag_value)
        if problem is not None:
            raise fail(problem)
    deps: list[Dependency] = []
    seen: set[str] = set()
    for dep in spec.deps:
        dep = Dependency(asset=dep) if isinstance(dep, str) else dep
        if dep.asset not in specs:
            near = difflib.get_close_matches(dep.asset, list(specs), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise fail(f"unknown dependency {dep.asset!r}{hint}")
        if dep.asset == key:
            raise fail("an asset cannot depend on itself")
        if dep.asset in seen:
            raise fail(f"dependency {dep.asset!r} is listed twice")
        seen.add(dep.asset)
        deps.append(dep)
    return AssetDef(
        key=key,
        source_file=file,
        deps=tuple(deps),
        partitions=spec.partitions,
        command=tuple(spec.command) if isinstance(spec.command, list) else spec.command,
        python=spec.python,
        group=spec.group,
        tags=dict(spec.tags),
        kinds=tuple(spec.kinds),
        owners=tuple(spec.owners),
        retries=spec.retries,
        timeout_s=spec.timeout_s,
        description=spec.description,
    )


def _jsonable(value: Any) -> Any:
    """TOML tables as canonical-JSON-safe builtins: floats and datetimes become strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return repr(value)
