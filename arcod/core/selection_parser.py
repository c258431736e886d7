"""The selection language: its syntax tree, its parser and its canonical printer.

One grammar, one meaning, no fallback. An expression either parses to exactly one tree or
is refused with the column of the problem; legacy Dagster forms are refused with the new
spelling rather than given a second meaning.

    expr      := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | traversal
    traversal := [DEPTH] ["+"] atom ["+" [DEPTH]]     (a prefix DEPTH needs the "+")
    atom      := "(" expr ")" | "roots(" expr ")" | "sinks(" expr ")" | "*" | primitive
    primitive := KEY | "key:" VALUE | "tag:" VALUE ["=" VALUE]
               | "group:" VALUE | "kind:" VALUE | "owner:" VALUE

Decisions the specification leaves open, made here once:

- Whitespace between tokens is insignificant (`2 + a` is `2+a`); operators are lowercase.
- A bare key is a plain asset key (`sales/daily`). Wildcards need the `key:` form,
  quoted or not (`key:"raw/*"`, `key:raw/*`), so a bare word with `*` is always refused:
  `*X` and `X*` are the legacy Dagster traversals and deserve a pointed message.
  In a key pattern `*` matches any run of characters, `/` included.
- A run of digits directly followed by `+` is a depth prefix: `2+a` is "a and its parents
  to depth 2". An asset whose key is all digits is written `key:2` where that matters
  (`key:2+` selects asset `2` and its descendants); `and`, `or` and `not` are always
  operators, so assets with those names are written `key:and`.
- `roots` and `sinks` are functions only when an opening parenthesis follows; otherwise they
  are asset keys.
- Unquoted values are runs of letters, digits and `_ . - / @ :` (so `owner:team:data`
  works); anything else is double-quoted, with `\\"` and `\\\\` as the only escapes. Only
  `key:` values take `*`; elsewhere a `*` must be quoted and is then literal.
- `0+X` parses (it is X) and is kept as written.

The tree is made of frozen msgspec structs (a tagged union, so it can be stored and sent), and
`parse_selection(format_selection(n)) == n` for every tree.
"""

from __future__ import annotations

import difflib
import re
from string import ascii_letters, digits
from typing import Union

import msgspec

from arcod.core.errors import PARSE_ERROR, ArcodError

UNLIMITED = -1
"""A traversal depth meaning "all the way"."""

ATTRIBUTE_NAMES = ("group", "kind", "owner")
_PREFIXES = ("key", "tag", *ATTRIBUTE_NAMES)
_OPERATORS = ("and", "or", "not")
_FUNCTIONS = ("roots", "sinks")

_KEY_PATTERN_RE = re.compile(r"\A[A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*\Z")
_PLAIN_KEY_RE = re.compile(r"\A[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*\Z")
_SAFE_VALUE_RE = re.compile(r"\A[A-Za-z0-9_./@:-]+\Z")

_WORD_START = frozenset(ascii_letters + digits + "_")
# A bare word is read greedily over these and then validated, so `sales-daily` is reported
# as one bad key rather than as a key followed by a stray `-`.
_WORD_CHARS = _WORD_START | frozenset("/*.-@")
_VALUE_CHARS = _WORD_START | frozenset("/*.-@:")
_WHITESPACE = frozenset(" \t\r\n")


class Key(msgspec.Struct, frozen=True, tag="key"):
    """An asset key, or with `*` a pattern over keys (`*` matches any run, `/` included)."""

    pattern: str

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not _KEY_PATTERN_RE.match(self.pattern):
            raise ValueError(f"invalid asset key pattern: {self.pattern!r}")

    @property
    def is_wildcard(self) -> bool:
        return "*" in self.pattern


class Tag(msgspec.Struct, frozen=True, tag="tag"):
    """Has tag `name`; with `value`, has it with exactly that value."""

    name: str
    value: str | None = None


class Attribute(msgspec.Struct, frozen=True, tag="attribute"):
    """`group:` equals, `kind:` and `owner:` contain, `value`."""

    name: str  # one of ATTRIBUTE_NAMES
    value: str

    def __post_init__(self) -> None:
        if self.name not in ATTRIBUTE_NAMES:
            raise ValueError(f"attribute must be one of {ATTRIBUTE_NAMES}, got {self.name!r}")


class AllAssets(msgspec.Struct, frozen=True, tag="all"):
    """`*`: every asset."""


class Traverse(msgspec.Struct, frozen=True, tag="traverse"):
    """The operand plus its ancestors and/or descendants.

    A depth is None (no closure that way), UNLIMITED (-1) or N >= 0 edges, by shortest path.
    """

    operand: Node
    upstream: int | None = None
    downstream: int | None = None

    def __post_init__(self) -> None:
        if self.upstream is None and self.downstream is None:
            raise ValueError("a traversal needs an upstream or a downstream depth")
        for depth in (self.upstream, self.downstream):
            if depth is not None and (type(depth) is not int or depth < UNLIMITED):
                raise ValueError(f"a depth is None, -1 (unlimited) or >= 0, got {depth!r}")


class Not(msgspec.Struct, frozen=True, tag="not"):
    operand: Node


class And(msgspec.Struct, frozen=True, tag="and"):
    left: Node
    right: Node


class Or(msgspec.Struct, frozen=True, tag="or"):
    left: Node
    right: Node


class Roots(msgspec.Struct, frozen=True, tag="roots"):
    """Members of the operand with no ancestor (anywhere in the graph) in the operand."""

    operand: Node


class Sinks(msgspec.Struct, frozen=True, tag="sinks"):
    """Members of the operand with no descendant (anywhere in the graph) in the operand."""

    operand: Node


Node = Union[Key, Tag, Attribute, AllAssets, Traverse, Not, And, Or, Roots, Sinks]
Primitive = Union[Key, Tag, Attribute, AllAssets]


# -- errors ------------------------------------------------------------------------------


def _parse_error(text: str, pos: int, reason: str) -> ArcodError:
    """`reason`, the expression, and a caret under the offending character."""
    column = pos + 1
    shown = "".join(" " if c in "\t\r\n" else c for c in text)
    message = f"cannot parse selection at column {column}: {reason}\n  {shown}\n  {' ' * pos}^"
    return ArcodError(PARSE_ERROR, message, {"column": column, "expression": text})


def _legacy_prefix(n: int) -> str:
    if n == 1:
        return "`*X` is legacy syntax; use `+X` for X and everything upstream"
    return f"`{'+' * n}X` is legacy syntax; use `{n}+X` for X and its upstream to depth {n}"


def _legacy_suffix(n: int) -> str:
    if n == 1:
        return (
            "`X*` is legacy syntax; use `X+` for X and everything downstream "
            '(or `key:"X*"` for a wildcard over keys)'
        )
    return f"`X{'+' * n}` is legacy syntax; use `X+{n}` for X and its downstream to depth {n}"


# -- parser ------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, pos: int, reason: str) -> ArcodError:
        return _parse_error(self.text, pos, reason)

    # low-level scanning

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def nonws_after(self, pos: int) -> tuple[str, int]:
        while pos < len(self.text) and self.text[pos] in _WHITESPACE:
            pos += 1
        return (self.text[pos] if pos < len(self.text) else ""), pos

    def word_at(self, pos: int) -> tuple[str, int]:
        """The bare word starting at `pos` (empty if none) and where it ends."""
        if pos >= len(self.text) or self.text[pos] not in _WORD_START:
            return "", pos
        end = pos
        while end < len(self.text) and self.text[end] in _WORD_CHARS:
            end += 1
        return self.text[pos:end], end

    def keyword(self, kw: str) -> bool:
        self.skip_ws()
        word, end = self.word_at(self.pos)
        if word == kw:
            self.pos = end
            return True
        return False

    def count_pluses(self, pos: int) -> int:
        n = 0
        while True:
            c, pos = self.nonws_after(pos)
            if c != "+":
                return n
            n += 1
            pos += 1

    def unexpected(self, expected: str) -> ArcodError:
        self.skip_ws()
        pos, c = self.pos, self.peek()
        if not c:
            return self.fail(pos, f"unexpected end of expression; expected {expected}")
        if c == ",":
            return self.fail(pos, "commas are legacy syntax; combine selections with `or` (`a or b`)")
        if c == "*":
            return self.fail(pos, _legacy_suffix(1))
        before = self.text[:pos].rstrip()
        previous = before[len(before.rstrip("".join(_WORD_START))) :]
        if previous.lower() in _OPERATORS and previous not in _OPERATORS:
            # `NOT a` reads as the asset `NOT` followed by `a`; say what was meant.
            return self.fail(
                len(before) - len(previous),
                f"operators are lowercase: write `{previous.lower()}`, not `{previous}`",
            )
        word, _ = self.word_at(pos)
        if word:
            if word.lower() in _OPERATORS:
                return self.fail(pos, f"operators are lowercase: write `{word.lower()}`, not `{word}`")
            if self.text[:pos].rstrip().endswith("+"):
                hint = "`+` is a traversal, not a union: combine selections with `or`"
            else:
                hint = "combine selections with `and` / `or`"
            return self.fail(pos, f"unexpected `{word}`; expected {expected} ({hint})")
        hint = ""
        if c not in _VALUE_CHARS and c not in "()+\"=":
            hint = " (values with other characters must be double-quoted)"
        return self.fail(pos, f"unexpected `{c}`; expected {expected}{hint}")

    # grammar

    def parse(self) -> Node:
        self.skip_ws()
        if not self.peek():
            raise self.fail(0, "the expression is empty; give an asset key or `*` for all assets")
        node = self.parse_or()
        self.skip_ws()
        if self.pos < len(self.text):
            if self.peek() == ")":
                raise self.fail(self.pos, "unmatched `)`")
            raise self.unexpected("`and`, `or` or the end of the expression")
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.keyword("or"):
            node = Or(node, self.parse_and())
        return node

    def parse_and(self) -> Node:
        node = self.parse_not()
        while self.keyword("and"):
            node = And(node, self.parse_not())
        return node

    def parse_not(self) -> Node:
        if self.keyword("not"):
            return Not(self.parse_not())
        return self.parse_traversal()

    def parse_traversal(self) -> Node:
        self.skip_ws()
        up: int | None = None
        word, end = self.word_at(self.pos)
        nxt, plus = self.nonws_after(end)
        if word and word.isdigit() and nxt == "+":
            # `2+X`: a depth prefix. `2+` alone is a depth with nothing to apply it to.
            if self.count_pluses(plus + 1):
                raise self.fail(plus, _legacy_prefix(1 + self.count_pluses(plus + 1)))
            up = int(word)
            self.pos = plus + 1
            c, _ = self.nonws_after(self.pos)
            if not c:
                raise self.fail(
                    self.pos,
                    f"expected an asset selection after `{word}+` (a number before `+` is an "
                    f"upstream depth; for the asset `{word}` and its downstream write `key:{word}+`)",
                )
        elif self.peek() == "+":
            n = self.count_pluses(self.pos)
            if n > 1:
                raise self.fail(self.pos, _legacy_prefix(n))
            up = UNLIMITED
            self.pos += 1
        operand = self.parse_atom(after_plus=up is not None)
        down: int | None = None
        self.skip_ws()
        if self.peek() == "+":
            n = self.count_pluses(self.pos)
            if n > 1:
                raise self.fail(self.pos, _legacy_suffix(n))
            self.pos += 1
            c, at = self.nonws_after(self.pos)
            word, end = self.word_at(at)
            if word and word.isdigit():
                down = int(word)
                self.pos = end
            else:
                down = UNLIMITED
        elif self.peek() == "*":
            raise self.fail(self.pos, _legacy_suffix(1))
        if up is None and down is None:
            return operand
        return Traverse(operand, up, down)

    def parse_atom(self, after_plus: bool) -> Node:
        self.skip_ws()
        start, c = self.pos, self.peek()
        if c == "(":
            self.pos += 1
            node = self.parse_or()
            self.expect_close(start)
            return node
        if c == "*":
            after = self.text[start + 1] if start + 1 < len(self.text) else ""
            if after and (after in _WORD_CHARS or after == "("):
                raise self.fail(start, _legacy_prefix(1))
            self.pos += 1
            return AllAssets()
        if c == '"':
            raise self.fail(start, 'a quoted value needs a prefix, for example `key:"raw/*"` or `tag:"a b"`')
        word, end = self.word_at(start)
        if not word:
            raise self.unexpected("an asset selection")
        if end < len(self.text) and self.text[end] == ":":
            self.pos = end + 1
            return self.parse_prefixed(word, start)
        if word in _OPERATORS:
            if after_plus and word == "not":
                raise self.fail(start, "`not` cannot follow `+`; use parentheses: `+(not X)`")
            raise self.fail(start, f"expected an asset selection, found the operator `{word}`")
        if word in _FUNCTIONS:
            c, paren = self.nonws_after(end)
            if c == "(":
                self.pos = paren + 1
                inner = self.parse_or()
                self.expect_close(paren)
                return Roots(inner) if word == "roots" else Sinks(inner)
        self.pos = end
        return self.bare_key(word, start)

    def expect_close(self, opened: int) -> None:
        self.skip_ws()
        if self.peek() == ")":
            self.pos += 1
            return
        if not self.peek():
            raise self.fail(opened, "this `(` is never closed; add `)`")
        raise self.unexpected("`and`, `or` or `)`")

    def bare_key(self, word: str, start: int) -> Key:
        star = word.find("*")
        if star >= 0:
            if word.endswith("*") and not word.endswith("/*"):
                raise self.fail(start + len(word) - 1, _legacy_suffix(1))
            raise self.fail(start, f'wildcards need the `key:` prefix: `key:"{word}"`')
        if not _PLAIN_KEY_RE.match(word):
            raise self.fail(
                start,
                f"`{word}` is not a valid asset key: a key is segments of letters, digits and "
                "`_` joined by `/`; quote other values behind a prefix (`tag:\"...\"`)",
            )
        return Key(word)

    def parse_prefixed(self, prefix: str, start: int) -> Node:
        if prefix not in _PREFIXES:
            near = difflib.get_close_matches(prefix, _PREFIXES, n=1)
            hint = f" (did you mean `{near[0]}:`?)" if near else ""
            raise self.fail(
                start,
                f"unknown prefix `{prefix}:`{hint}; use key:, tag:, group:, kind: or owner:",
            )
        if prefix == "key":
            at = self.pos
            value = self.value("key:", wildcards=True)
            if not _KEY_PATTERN_RE.match(value):
                raise self.fail(
                    at,
                    f"`{value}` is not a valid asset key pattern: segments of letters, digits, "
                    "`_` and `*` joined by `/`",
                )
            return Key(value)
        if prefix == "tag":
            name = self.value("tag:", wildcards=False)
            if self.peek() == "=":
                self.pos += 1
                return Tag(name, self.value(f"tag:{_value(name)}=", wildcards=False))
            return Tag(name)
        return Attribute(prefix, self.value(f"{prefix}:", wildcards=False))

    def value(self, label: str, wildcards: bool) -> str:
        """A quoted or unquoted value after `label` (`group:`, `tag:tier=`...)."""
        at = self.pos
        if self.peek() == '"':
            return self.quoted()
        end = at
        while end < len(self.text) and self.text[end] in _VALUE_CHARS:
            end += 1
        value = self.text[at:end]
        if not value:
            raise self.fail(at, f"expected a value after `{label}` (quote it if it has spaces)")
        if not wildcards and "*" in value:
            raise self.fail(
                at + value.index("*"),
                f"only `key:` takes `*` wildcards; to match a literal `*` quote the value "
                f'(`{label}"{value}"`)',
            )
        self.pos = end
        return value

    def quoted(self) -> str:
        opened = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if escaped not in ('"', "\\"):
                    raise self.fail(self.pos, 'unknown escape; inside quotes only `\\"` and `\\\\` are escapes')
                out.append(escaped)
                self.pos += 2
                continue
            out.append(c)
            self.pos += 1
        raise self.fail(opened, 'unterminated quoted value; close it with `"`')


def parse_selection(text: str) -> Node:
    """Parse a selection expression, or raise `ArcodError(PARSE_ERROR)` with the column."""
    return _Parser(text).parse()


# -- printer -----------------------------------------------------------------------------

_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_TRAVERSE, _PREC_ATOM = 1, 2, 3, 4, 5


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(value: str) -> str:
    return value if _SAFE_VALUE_RE.match(value) else _quote(value)


def _format_key(pattern: str) -> str:
    if "*" in pattern:
        return f"key:{_quote(pattern)}"
    if pattern in _OPERATORS or pattern in _FUNCTIONS or pattern.isdigit():
        return f"key:{pattern}"
    return pattern


def _precedence(node: Node) -> int:
    if isinstance(node, Or):
        return _PREC_OR
    if isinstance(node, And):
        return _PREC_AND
    if isinstance(node, Not):
        return _PREC_NOT
    if isinstance(node, Traverse):
        return _PREC_TRAVERSE
    return _PREC_ATOM


def _format(node: Node, minimum: int) -> str:
    text = _format_bare(node)
    return f"({text})" if _precedence(node) < minimum else text


def _format_bare(node: Node) -> str:
    if isinstance(node, Key):
        return _format_key(node.pattern)
    if isinstance(node, Tag):
        name = _value(node.name)
        return f"tag:{name}" if node.value is None else f"tag:{name}={_value(node.value)}"
    if isinstance(node, Attribute):
        return f"{node.name}:{_value(node.value)}"
    if isinstance(node, AllAssets):
        return "*"
    if isinstance(node, Traverse):
        up = "" if node.upstream is None else ("+" if node.upstream == UNLIMITED else f"{node.upstream}+")
        down = "" if node.downstream is None else ("+" if node.downstream == UNLIMITED else f"+{node.downstream}")
        return f"{up}{_format(node.operand, _PREC_ATOM)}{down}"
    if isinstance(node, Not):
        return f"not {_format(node.operand, _PREC_NOT)}"
    if isinstance(node, And):
        return f"{_format(node.left, _PREC_AND)} and {_format(node.right, _PREC_NOT)}"
    if isinstance(node, Or):
        return f"{_format(node.left, _PREC_OR)} or {_format(node.right, _PREC_AND)}"
    if isinstance(node, Roots):
        return f"roots({_format(node.operand, _PREC_OR)})"
    if isinstance(node, Sinks):
        return f"sinks({_format(node.operand, _PREC_OR)})"
    raise TypeError(f"not a selection node: {node!r}")


def format_selection(node: Node) -> str:
    """The canonical text of a tree: minimal parentheses, lowercase operators, single spaces."""
    return _format(node, _PREC_OR)
