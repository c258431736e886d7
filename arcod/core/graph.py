"""The asset dependency graph: who feeds whom, and walks over it.

Built once per definitions load and never mutated, so selections, plans and reruns planned
from one load all see the same graph. Every answer is sorted or otherwise deterministic:
a selection resolved twice over the same definitions must give the same plan, and the plan's
fingerprint depends on that.

Edges point from a parent (an upstream asset) to a child (an asset that depends on it).
`from_deps` accepts cycles so the loader can ask `find_cycle` for the path and report it;
walks (`upstream`, `downstream`, `closure`) terminate on cyclic graphs too, only
`topological_order` refuses them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from arcod.core.asset_keys import ASSET_KEY_RE, validate_asset_key

__all__ = ["ASSET_KEY_RE", "AssetGraph", "validate_asset_key"]

Direction = Literal["upstream", "downstream"]


class AssetGraph:
    """An immutable DAG (or, before validation, any directed graph) of asset keys."""

    __slots__ = ("_keys", "_parents", "_children")

    _keys: tuple[str, ...]
    _parents: dict[str, tuple[str, ...]]
    _children: dict[str, tuple[str, ...]]

    def __init__(self, parents: Mapping[str, tuple[str, ...]], children: Mapping[str, tuple[str, ...]]):
        # Private: use `from_deps`, which validates and sorts.
        object.__setattr__(self, "_keys", tuple(sorted(parents)))
        object.__setattr__(self, "_parents", dict(parents))
        object.__setattr__(self, "_children", dict(children))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AssetGraph is immutable")

    @classmethod
    def from_deps(cls, deps: Mapping[str, Iterable[str]]) -> AssetGraph:
        """Build from `key -> its parents`. Every parent must itself be a key.

        Key syntax is not checked here: the loader validates keys first so it can name the
        file an invalid key came from.
        """
        parents: dict[str, tuple[str, ...]] = {}
        unknown: set[str] = set()
        for key, ps in deps.items():
            ps = tuple(sorted(set(ps)))
            unknown.update(p for p in ps if p not in deps)
            parents[key] = ps
        if unknown:
            raise ValueError(f"dependencies on undefined assets: {', '.join(sorted(unknown))}")
        children: dict[str, list[str]] = {key: [] for key in parents}
        for key in sorted(parents):
            for p in parents[key]:
                children[p].append(key)  # appended in sorted order of `key`
        return cls(parents, {k: tuple(v) for k, v in children.items()})

    # -- shape -------------------------------------------------------------------------

    @property
    def keys(self) -> tuple[str, ...]:
        """Every asset key, sorted."""
        return self._keys

    def __contains__(self, key: object) -> bool:
        return key in self._parents

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AssetGraph):
            return NotImplemented
        return self._parents == other._parents

    def __hash__(self) -> int:
        return hash(tuple((k, self._parents[k]) for k in self._keys))

    def __repr__(self) -> str:
        return f"AssetGraph({len(self._keys)} assets)"

    def parents(self, key: str) -> tuple[str, ...]:
        """Direct upstream assets of `key`, sorted."""
        return self._parents[key]

    def children(self, key: str) -> tuple[str, ...]:
        """Direct downstream assets of `key`, sorted."""
        return self._children[key]

    def deps(self) -> dict[str, tuple[str, ...]]:
        """`key -> parents`, the input `from_deps` takes (so graphs can be stored and rebuilt)."""
        return dict(self._parents)

    def subgraph(self, keys: Iterable[str]) -> AssetGraph:
        """The induced subgraph: the given keys and only the edges between them.

        A path that went through an asset left out is cut, not shortcut: this is the graph
        "as the plan saw it", which is what a subset rerun evaluates its selection in.
        """
        chosen = set(keys)
        unknown = sorted(k for k in chosen if k not in self._parents)
        if unknown:
            raise ValueError(f"not in the graph: {', '.join(unknown)}")
        return AssetGraph.from_deps(
            {k: [p for p in self._parents[k] if p in chosen] for k in chosen}
        )

    # -- walks -------------------------------------------------------------------------

    def closure(
        self, roots: Iterable[str], direction: Direction, depth: int | None = None
    ) -> dict[str, tuple[int, str]]:
        """Assets reachable from `roots` in `direction` by a path of 1..depth edges.

        Maps each to `(shortest distance, nearest root)`, the nearest root being the smallest
        key among the roots at that distance, so `--explain` is deterministic. A root appears
        only if it is reachable from a root (another one, or itself through a cycle).
        `depth=None` is unlimited; `depth=0` reaches nothing.
        """
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be None or >= 0, got {depth}")
        if direction not in ("upstream", "downstream"):
            raise ValueError(f"direction must be 'upstream' or 'downstream', got {direction!r}")
        edges = self._parents if direction == "upstream" else self._children
        frontier: dict[str, str] = {}
        for root in sorted(set(roots)):
            if root not in edges:
                raise KeyError(root)
            frontier[root] = root
        found: dict[str, tuple[int, str]] = {}
        distance = 0
        while frontier and (depth is None or distance < depth):
            distance += 1
            reached: dict[str, str] = {}
            for node, origin in frontier.items():
                for nxt in edges[node]:
                    if nxt in found:
                        continue
                    best = reached.get(nxt)
                    if best is None or origin < best:
                        reached[nxt] = origin
            for node, origin in reached.items():
                found[node] = (distance, origin)
            frontier = reached
        return found

    def upstream(self, roots: Iterable[str], depth: int | None = None) -> dict[str, int]:
        """Ancestors of `roots` within `depth` edges -> shortest distance (see `closure`)."""
        return {k: d for k, (d, _) in self.closure(roots, "upstream", depth).items()}

    def downstream(self, roots: Iterable[str], depth: int | None = None) -> dict[str, int]:
        """Descendants of `roots` within `depth` edges -> shortest distance (see `closure`)."""
        return {k: d for k, (d, _) in self.closure(roots, "downstream", depth).items()}

    def topological_order(self, subset: Iterable[str] | None = None) -> list[str]:
        """Parents before children, ties broken by key (Kahn's algorithm with a heap).

        With `subset`, orders the induced subgraph. Raises ValueError on a cycle, naming it.
        """
        if subset is None:
            nodes: set[str] = set(self._keys)
        else:
            nodes = set(subset)
            unknown = sorted(k for k in nodes if k not in self._parents)
            if unknown:
                raise ValueError(f"not in the graph: {', '.join(unknown)}")
        indegree = {k: sum(1 for p in self._parents[k] if p in nodes) for k in nodes}
        ready = [k for k, n in indegree.items() if n == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            key = heapq.heappop(ready)
            order.append(key)
            for child in self._children[key]:
                if child in nodes:
                    indegree[child] -= 1
                    if indegree[child] == 0:
                        heapq.heappush(ready, child)
        if len(order) != len(nodes):
            cycle = (self if subset is None else self.subgraph(nodes)).find_cycle()
            raise ValueError(f"dependency cycle: {' -> '.join(cycle or [])}")
        return order

    def find_cycle(self) -> list[str] | None:
        """One cycle as a closed path `[a, b, ..., a]` where each asset feeds the next.

        Deterministic: depth-first over sorted keys and sorted children, and the path is
        rotated to start at its smallest key, so the loader reports the same cycle every time.
        """
        white, gray, black = 0, 1, 2
        color = dict.fromkeys(self._keys, white)
        for start in self._keys:
            if color[start] != white:
                continue
            path = [start]
            color[start] = gray
            stack = [iter(self._children[start])]
            while stack:
                advanced = False
                for child in stack[-1]:
                    if color[child] == gray:
                        cycle = path[path.index(child):]
                        i = cycle.index(min(cycle))
                        cycle = cycle[i:] + cycle[:i]
                        return [*cycle, cycle[0]]
                    if color[child] == white:
                        color[child] = gray
                        path.append(child)
                        stack.append(iter(self._children[child]))
                        advanced = True
                        break
                if not advanced:
                    stack.pop()
                    color[path.pop()] = black
        return None
