"""Step 1 of a document's path: read YAML safely into plain data plus a position index.

libyaml (``yaml.CSafeLoader`` when PyYAML has it, the pure-Python composer otherwise) composes
the node graph; this module walks it into plain data instead of letting PyYAML construct
objects. That keeps every value's line and column, and lets each refusal happen cheaply:

- files over :data:`MAX_BYTES`, or not UTF-8;
- nesting deeper than :data:`MAX_DEPTH` (libyaml itself stops composing at 1,000 levels);
- aliases that would expand to more than :data:`MAX_ALIAS_NODES` values (billion laughs:
  composing shares nodes, and the walk stops once alias re-visits pass the bound);
- duplicate mapping keys, non-scalar keys, and any tag outside the YAML core schema.

Several YAML documents in one file (``---``) are allowed; each one is a policy. Timestamps
(``expires: 2027-06-30``) are kept as the ISO text the user wrote, never as ``datetime``: the
data must stay JSON-able and the schema checks the format. Mapping keys are always strings
(``on:`` is the key ``"on"``, not ``True``), since every key in a policy is a field name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from jcstate.document.oneline import one_line, quote
from jcstate.errors import Problem

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "Loaded",
    "Path",
    "Positions",
    "discover",
    "load_file",
    "load_text",
]

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000

Path = tuple[str | int, ...]

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.constructor.SafeConstructor()

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_CORE + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MERGE, _MAP, _SEQ = (_CORE + t for t in ("timestamp", "merge", "map", "seq"))
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP}


@dataclass
class Positions:
    """Where each value of one YAML document sits in its file (1-based line and column).

    ``values[path]`` is where the value at ``path`` starts; ``keys[path]`` is where the mapping
    key naming it starts. A path with no entry (inside an alias) falls back to its nearest
    ancestor, which is where the alias was written.
    """

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def problem(self, path: Sequence[str | int], message: str, *, key: bool = False) -> Problem:
        """A problem at ``path``; the message is made one line (it may quote user text)."""
        line, column = self.of(path, key=key)
        return Problem(self.file, line, column, one_line(message))

    def where(self, path: Sequence[str | int]) -> str:
        """``file:line`` of a value, the short form used in messages and Document.sources."""
        return f"{self.file}:{self.of(path)[0]}"


@dataclass
class Loaded:
    """One YAML document of a file: plain JSON-able data and where each value was written."""

    data: Any
    positions: Positions
    index: int  # 0 for the first document in the file


class _Refused(Exception):
    """A limit or rule of the loader was broken at a known place."""

    def __init__(self, mark: Any, message: str):
        super().__init__(message)
        self.line = mark.line + 1
        self.column = mark.column + 1
        self.message = message


def discover(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """The policy files named by ``paths``: files as given, folders searched for *.yaml/*.yml.

    Hidden files and folders (``.git``, ``.github``) are skipped inside folders. The result is
    sorted and free of duplicates so that every run reports in the same order.
    """
    files: list[str] = []
    problems: list[Problem] = []
    for path in paths:
        if os.path.isdir(path):
            for top, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in names:
                    if name.endswith((".yaml", ".yml")) and not name.startswith("."):
                        files.append(os.path.join(top, name))
        elif os.path.isfile(path):
            files.append(path)
        else:
            problems.append(Problem(path, 1, 1, "no such file or folder"))
    return sorted(set(files)), problems


def load_file(path: str) -> tuple[list[Loaded], list[Problem]]:
    """Load every YAML document in ``path``; a broken file yields problems and no documents."""
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            return [], [Problem(path, 1, 1, f"file is {size} bytes; the limit is {MAX_BYTES}")]
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        return [], [Problem(path, 1, 1, f"cannot read: {exc.strerror}")]
    if len(raw) > MAX_BYTES:  # grew between stat and read
        return [], [Problem(path, 1, 1, f"file is over the limit of {MAX_BYTES} bytes")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return [], [Problem(path, line, column, "not UTF-8 text; save the file as UTF-8")]
    return load_text(text, path)


def load_text(text: str, file: str) -> tuple[list[Loaded], list[Problem]]:
    """Load YAML text (already size-checked and decoded) as if it came from ``file``."""
    try:
        return _compose(text, file), []
    except _Refused as exc:
        return [], [Problem(file, exc.line, exc.column, one_line(exc.message))]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = exc.problem or exc.context or "invalid YAML"
        return [], [Problem(file, line, column, one_line(f"YAML syntax error: {detail}"))]
    except yaml.YAMLError as exc:  # reader errors (control characters) carry a position too
        line, column = _reader_position(exc, text)
        return [], [Problem(file, line, column, one_line(f"YAML error: {_reader_message(exc)}"))]


def _reader_position(exc: yaml.YAMLError, text: str) -> tuple[int, int]:
    position = getattr(exc, "position", None)
    if not isinstance(position, int):
        return 1, 1
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _reader_message(exc: yaml.YAMLError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc).splitlines()[0]


def _compose(text: str, file: str) -> list[Loaded]:
    """Compose each document's node graph in libyaml, then walk it into plain data.

    Composing never expands aliases (an alias is the same node object again), so a billion
    laughs document composes small; the walk counts every node it visits again through an
    alias and stops at the bound.
    """
    loader = _Parser(text)
    docs: list[Loaded] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            walk = _Walk(Positions(file))
            data = walk.value(node, (), 0)
            if data is not None:  # an empty document (only comments) is no policy
                docs.append(Loaded(data, walk.positions, len(docs)))
    except RecursionError as exc:  # pure-Python composer only; libyaml stops at its own depth
        raise _Refused(_Mark(0, 0), f"nesting is deeper than {MAX_DEPTH} levels") from exc
    finally:
        loader.dispose()
    return docs


class _Mark:
    """A position when the parser gives none."""

    def __init__(self, line: int, column: int):
        self.line, self.column = line, column


class _Walk:
    """Turns one document's node graph into plain data, recording positions on the way."""

    def __init__(self, positions: Positions):
        self.positions = positions
        self.values = positions.values
        self.seen: set[int] = set()
        self.expanded = 0

    def value(self, node: Any, path: Path, depth: int) -> Any:
        mark = node.start_mark
        self.values[path] = (mark.line + 1, mark.column + 1)
        if id(node) in self.seen:  # a second visit: this is an alias being expanded
            self._count_alias(node, mark)
        else:
            self.seen.add(id(node))
        cls = node.__class__
        if cls is yaml.ScalarNode:
            return _scalar(node, mark)
        if depth >= MAX_DEPTH:
            raise _Refused(mark, f"nesting is deeper than {MAX_DEPTH} levels")
        if cls is yaml.SequenceNode:
            if node.tag != _SEQ:
                raise _Refused(mark, f"tag {node.tag} is not allowed; only YAML core tags are")
            return [self.value(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if node.tag != _MAP:
            raise _Refused(mark, f"tag {node.tag} is not allowed; only YAML core tags are")
        return self.mapping(node, path, depth)

    def mapping(self, node: Any, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys = self.positions.keys
        merges = []
        for key_node, value_node in node.value:
            key_mark = key_node.start_mark
            if key_node.__class__ is not yaml.ScalarNode:
                raise _Refused(key_mark, "mapping keys must be plain strings, not collections")
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if key_node.tag not in _KEY_TAGS:
                raise _Refused(key_mark, f"tag {key_node.tag} is not allowed on a mapping key")
            key = key_node.value
            here = (*path, key)
            if key in out:
                first = keys[here][0]
                raise _Refused(
                    key_mark, f"duplicate key {quote(key)} (first given at line {first})"
                )
            keys[here] = (key_mark.line + 1, key_mark.column + 1)
            out[key] = self.value(value_node, here, depth + 1)
        for merge_node in merges:
            self._merge(out, merge_node, path, depth)
        return out

    def _merge(self, out: dict[str, Any], node: Any, path: Path, depth: int) -> None:
        """YAML merge keys (``<<: *base``): explicit keys win, earlier merged mappings win."""
        sources = node.value if node.__class__ is yaml.SequenceNode else [node]
        spot = (node.start_mark.line + 1, node.start_mark.column + 1)
        for source in sources:
            if source.__class__ is not yaml.MappingNode:
                raise _Refused(source.start_mark, "'<<' (merge key) needs mappings")
            merged = self.value(source, (*path, "<<"), depth + 1)
            for key, item in merged.items():
                if key not in out:
                    out[key] = item
                    self.positions.keys[(*path, key)] = spot
                    self.values[(*path, key)] = spot

    def _count_alias(self, node: Any, mark: Any) -> None:
        self.expanded += 1
        if self.expanded > MAX_ALIAS_NODES:
            raise _Refused(
                mark,
                f"aliases expand to more than {MAX_ALIAS_NODES} values; "
                "refusing (possible 'billion laughs' document)",
            )


_KEY_TAGS = frozenset([_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP])


def _scalar(node: Any, mark: Any) -> Any:
    tag = node.tag
    if tag == _STR or tag == _TIMESTAMP:
        return node.value  # timestamps stay the ISO text the user wrote
    if tag not in _SCALAR_TAGS:
        raise _Refused(mark, f"tag {tag} is not allowed; only YAML core tags are")
    if tag == _NULL:
        return None
    try:
        if tag == _BOOL:
            return _constructor.construct_yaml_bool(node)
        if tag == _INT:
            return _constructor.construct_yaml_int(node)
        return _constructor.construct_yaml_float(node)
    except (ValueError, KeyError) as exc:
        raise _Refused(mark, f"{node.value!r} is not a valid {tag.rsplit(':', 1)[-1]}") from exc
