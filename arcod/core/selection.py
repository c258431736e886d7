"""Resolving selections: from an expression to a sorted set of asset keys, with reasons.

The contract (SPEC §4) is a set of roots plus explicit closure rules. Nothing upstream or
downstream of what an expression names is ever added unless a `+` (or `--upstream` /
`--downstream`) asks for it, and an empty result is an error rather than a run that does
nothing.

Meaning of each form, over the graph the selection is resolved in:

- `key:P` with no `*` is that exact asset; if it does not exist the whole request is
  refused, listing every unknown exact key of every expression at once (sorted, each with
  near names). A pattern with `*` matches keys (`*` also spans `/`); matching nothing is
  fine by itself.
- `tag:T` has tag T with any value; `tag:T=V` has it with value V; `group:G` is in group G;
  `kind:K` / `owner:O` list K / O. Unknown labels match nothing, they are not errors.
- `N+X` adds ancestors of X at shortest distance 1..N (`+X`: any distance), `X+N` the same
  downstream. `roots(X)` keeps members of X none of whose ancestors (through any path in
  the graph, members or not) is in X; `sinks(X)` likewise with descendants.
- `not X` is every asset of the graph outside X.

Reasons, for `--explain`, are computed alongside the members:

- a member matched by a primitive is a `root`, `matched` being the canonical text of the
  primitive (`group:ingest`); a member that only `not X` produced is a root matched by
  the whole `not X`;
- a member added by a traversal is `upstream`/`downstream` `of` the nearest member of the
  traversal's operand, at its shortest `depth` (ties: the smallest key). Operand members
  keep their own reasons;
- `or` keeps, for each member, the best reason of the two sides: a root first, then the
  smaller depth, then the smaller `of` (then kind and matched text, so the choice is total);
- `and`, `not`, `roots()` and `sinks()` keep the reasons of their (left) operand.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import reduce
from typing import Protocol

import msgspec

from arcod.core.errors import BAD_REQUEST, EMPTY_SELECTION, UNKNOWN_ASSETS, ArcodError
from arcod.core.graph import AssetGraph
from arcod.core.selection_parser import (
    UNLIMITED,
    AllAssets,
    And,
    Attribute,
    Key,
    Node,
    Not,
    Or,
    Roots,
    Sinks,
    Tag,
    Traverse,
    format_selection,
    parse_selection,
)

__all__ = [
    "AssetAttrs",
    "Node",
    "Reason",
    "Resolution",
    "SelectionRequest",
    "describe_reason",
    "format_selection",
    "parse_selection",
    "request_node",
    "resolve_expression",
    "resolve_request",
    "resolve_selection",
    "unknown_keys",
]


class AssetAttrs(Protocol):
    """The labels selection looks at. `arcod.core.definitions.AssetDef` is one."""

    @property
    def group(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def kinds(self) -> Sequence[str]: ...
    @property
    def owners(self) -> Sequence[str]: ...


class Reason(msgspec.Struct, frozen=True):
    """Why an asset is in a selection."""

    kind: str  # "root" | "upstream" | "downstream"
    of: str | None = None  # for upstream/downstream: the asset it is upstream/downstream of
    depth: int = 0
    matched: str | None = None  # for roots: the canonical text of what matched it


class Resolution(msgspec.Struct, frozen=True):
    """The resolved selection: sorted keys, and a reason for each."""

    keys: tuple[str, ...]
    reasons: dict[str, Reason]


class SelectionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The structured form: expressions OR-ed, then optional closure over the union."""

    select: tuple[str, ...]
    upstream: int | None = None  # None: no closure; -1: unlimited; N: to depth N
    downstream: int | None = None


def describe_reason(r: Reason) -> str:
    """One line for `--explain`: `root (group:ingest)`, `upstream of sales/daily at depth 1`."""
    if r.kind == "root":
        return f"root ({r.matched})" if r.matched else "root"
    return f"{r.kind} of {r.of} at depth {r.depth}"


# -- unknown keys ------------------------------------------------------------------------


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, (Traverse, Not, Roots, Sinks)):
        yield from _walk(node.operand)
    elif isinstance(node, (And, Or)):
        yield from _walk(node.left)
        yield from _walk(node.right)


def unknown_keys(node: Node, graph: AssetGraph) -> list[str]:
    """Every exact (wildcard-free) key in `node` that is not in `graph`, sorted."""
    return sorted(
        {n.pattern for n in _walk(node) if isinstance(n, Key) and not n.is_wildcard and n.pattern not in graph}
    )


def _unknown_assets_error(keys: Sequence[str], graph: AssetGraph) -> ArcodError:
    hints = []
    for key in keys:
        near = difflib.get_close_matches(key, graph.keys, n=3)
        hints.append(f"{key} (did you mean {', '.join(near)}?)" if near else key)
    plural = "s" if len(keys) > 1 else ""
    return ArcodError(
        UNKNOWN_ASSETS,
        f"unknown asset key{plural}: {'; '.join(hints)}. "
        "Run `arcod assets list` to see the defined assets; use `key:\"...*\"` to match a pattern.",
        {"keys": list(keys)},
    )


# -- evaluation --------------------------------------------------------------------------


def _rank(r: Reason) -> tuple[int, int, str, str, str]:
    return (r.kind != "root", r.depth, r.of or "", r.kind, r.matched or "")


def _better(a: Reason | None, b: Reason) -> Reason:
    return b if a is None or _rank(b) < _rank(a) else a


def _key_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


class _Evaluator:
    """Evaluates a tree to {member: reason}; insertion order is irrelevant, keys are sorted later."""

    def __init__(self, graph: AssetGraph, attrs: Mapping[str, AssetAttrs]) -> None:
        self.graph = graph
        self.attrs = attrs

    def as_roots(self, matches: Iterable[str], node: Node) -> dict[str, Reason]:
        reason = Reason("root", matched=format_selection(node))
        return dict.fromkeys(matches, reason)

    def labelled(self, node: Tag | Attribute) -> list[str]:
        out = []
        for key in self.graph.keys:
            a = self.attrs.get(key)
            if a is None:
                continue
            if isinstance(node, Tag):
                hit = node.name in a.tags if node.value is None else a.tags.get(node.name) == node.value
            elif node.name == "group":
                hit = a.group == node.value
            elif node.name == "kind":
                hit = node.value in a.kinds
            else:
                hit = node.value in a.owners
            if hit:
                out.append(key)
        return out

    def eval(self, node: Node) -> dict[str, Reason]:
        graph = self.graph
        if isinstance(node, Key):
            if not node.is_wildcard:
                return self.as_roots([node.pattern] if node.pattern in graph else [], node)
            regex = _key_regex(node.pattern)
            return self.as_roots([k for k in graph.keys if regex.fullmatch(k)], node)
        if isinstance(node, (Tag, Attribute)):
            return self.as_roots(self.labelled(node), node)
        if isinstance(node, AllAssets):
            return self.as_roots(graph.keys, node)
        if isinstance(node, Traverse):
            inner = self.eval(node.operand)
            out = dict(inner)
            for direction, depth in (("upstream", node.upstream), ("downstream", node.downstream)):
                if depth is None:
                    continue
                reached = graph.closure(inner, direction, None if depth == UNLIMITED else depth)
                for key, (distance, nearest) in reached.items():
                    if key not in inner:
                        out[key] = _better(out.get(key), Reason(direction, of=nearest, depth=distance))
            return out
        if isinstance(node, Not):
            inner = self.eval(node.operand)
            return self.as_roots([k for k in graph.keys if k not in inner], node)
        if isinstance(node, And):
            left, right = self.eval(node.left), self.eval(node.right)
            return {k: r for k, r in left.items() if k in right}
        if isinstance(node, Or):
            out = self.eval(node.left)
            for k, r in self.eval(node.right).items():
                out[k] = _better(out.get(k), r)
            return out
        if isinstance(node, (Roots, Sinks)):
            inner = self.eval(node.operand)
            direction = "downstream" if isinstance(node, Roots) else "upstream"
            reached = graph.closure(inner, direction)
            return {k: r for k, r in inner.items() if not self.reached_from_other(k, inner, reached, direction)}
        raise TypeError(f"not a selection node: {node!r}")

    def reached_from_other(
        self, key: str, members: Mapping[str, object], reached: Mapping[str, tuple[int, str]], direction: str
    ) -> bool:
        """Is `key` reachable (in `direction`) from a member other than itself?

        `reached` is the closure of all members, whose nearest root settles it unless `key`
        reaches itself first, which only happens on a cyclic graph: then ask without it.
        """
        hit = reached.get(key)
        if hit is None:
            return False
        if hit[1] != key:
            return True
        others = [m for m in members if m != key]
        return key in self.graph.closure(others, direction)  # type: ignore[arg-type]


def resolve_selection(node: Node, graph: AssetGraph, attrs: Mapping[str, AssetAttrs]) -> Resolution:
    """Resolve a parsed expression; refuses unknown exact keys and an empty result."""
    unknown = unknown_keys(node, graph)
    if unknown:
        raise _unknown_assets_error(unknown, graph)
    members = _Evaluator(graph, attrs).eval(node)
    if not members:
        text = format_selection(node)
        raise ArcodError(
            EMPTY_SELECTION,
            f"the selection `{text}` matches no assets; check the names and labels with "
            "`arcod assets list`",
            {"expression": text},
        )
    keys = tuple(sorted(members))
    return Resolution(keys=keys, reasons={k: members[k] for k in keys})


def resolve_expression(text: str, graph: AssetGraph, attrs: Mapping[str, AssetAttrs]) -> Resolution:
    return resolve_selection(parse_selection(text), graph, attrs)


def request_node(req: SelectionRequest) -> Node:
    """The structured request as one tree: `(s1 or s2 ...)` under the requested closure.

    Its `format_selection` is the canonical spelling of the request, handy for display.
    """
    if not req.select:
        raise ArcodError(BAD_REQUEST, "give at least one selection (`--select EXPR`)", {})
    for name, depth in (("upstream", req.upstream), ("downstream", req.downstream)):
        if depth is not None and (type(depth) is not int or depth < UNLIMITED):
            raise ArcodError(
                BAD_REQUEST,
                f"`{name}` must be a depth >= 0, or -1 for unlimited, got {depth!r}",
                {"field": name},
            )
    nodes = []
    for index, text in enumerate(req.select):
        try:
            nodes.append(parse_selection(text))
        except ArcodError as exc:
            exc.details["index"] = index
            raise
    node = reduce(Or, nodes)
    if req.upstream is None and req.downstream is None:
        return node
    return Traverse(node, req.upstream, req.downstream)


def resolve_request(req: SelectionRequest, graph: AssetGraph, attrs: Mapping[str, AssetAttrs]) -> Resolution:
    """Resolve `--select ... [--upstream[=N]] [--downstream[=N]]`.

    Unknown exact keys are collected across every `select` item before anything is refused.
    """
    return resolve_selection(request_node(req), graph, attrs)
