"""A fast yes/no answer to "is this document valid against the schema?".

jsonschema is the reference and writes the error messages, but walking a document with it
costs about a millisecond, too slow for 1,000 documents in well under two seconds. Almost every
document in a repo is valid, so the schema is compiled once here into plain Python closures
that only say yes or no; jsonschema runs only on documents this check rejects.

Safety rule: this check may reject a valid document (that costs time, never correctness), but
must never accept an invalid one. A schema keyword it does not know makes :func:`compile_schema`
raise :class:`Unsupported`, and the caller then uses jsonschema for everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

__all__ = ["Check", "Unsupported", "compile_schema"]

Check = Callable[[Any], bool]

# Keywords that never affect validity.
_ANNOTATIONS = frozenset(
    ["$schema", "$id", "title", "description", "default", "errorMessage", "examples", "$comment"]
)
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    # JSON Schema counts 1.0 as an integer, and so does jsonschema.
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


class Unsupported(Exception):
    """The schema uses something this compiler does not handle; use jsonschema alone."""


def compile_schema(
    root: Mapping[str, Any],
    by_id: Mapping[str, Mapping[str, Any]],
    formats: Callable[[Any, str], bool],
) -> Check:
    """Compile ``root`` (with the schemas it refers to, by $id) into a yes/no check."""
    compiled: dict[str, Check] = {}

    def ref(base: str, target: str) -> Check:
        uri = urljoin(base, target)
        if "#" in uri and not uri.endswith("#"):
            raise Unsupported(f"$ref with a fragment: {target}")
        uri = uri.rstrip("#")
        if uri not in by_id:
            raise Unsupported(f"unknown $ref {target}")
        if uri not in compiled:
            holder: list[Check] = []
            compiled[uri] = lambda value: holder[0](value)  # allows recursive schemas
            holder.append(build(by_id[uri], uri))
        return compiled[uri]

    def build(schema: Any, base: str) -> Check:
        if schema is True:
            return lambda value: True
        if schema is False:
            return lambda value: False
        if not isinstance(schema, Mapping):
            raise Unsupported("schema is not an object")
        base = urljoin(base, schema.get("$id", ""))
        checks: list[Check] = []
        for key, arg in schema.items():
            if key in _ANNOTATIONS:
                continue
            if key in ("then", "else"):
                continue  # handled with "if"
            maker = _KEYWORDS.get(key)
            if maker is None:
                raise Unsupported(f"keyword {key}")
            checks.append(maker(arg, _Context(schema, base, build, ref, formats)))
        if len(checks) == 1:
            return checks[0]
        return lambda value: all(check(value) for check in checks)

    return build(root, str(root.get("$id", "")))


@dataclass(frozen=True)
class _Context:
    """What a keyword's compiler may use besides its own argument."""

    schema: Mapping[str, Any]  # the schema object holding the keyword
    base: str  # its base URI, for $ref
    build: Callable[[Any, str], Check]
    ref: Callable[[str, str], Check]
    formats: Callable[[Any, str], bool]


Maker = Callable[[Any, _Context], Check]


def _type(arg: Any, c: _Context) -> Check:
    tests = [_TYPES[t] for t in ([arg] if isinstance(arg, str) else arg)]
    return lambda v: any(test(v) for test in tests)


def _properties(arg: Any, c: _Context) -> Check:
    props = {name: c.build(sub, c.base) for name, sub in arg.items()}

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        return all(props[k](item) for k, item in v.items() if k in props)

    return check


def _additional(arg: Any, c: _Context) -> Check:
    if "patternProperties" in c.schema:
        raise Unsupported("patternProperties")
    known = frozenset(c.schema.get("properties", {}))
    extra = c.build(arg, c.base)

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        return all(extra(item) for k, item in v.items() if k not in known)

    return check


def _required(arg: Any, c: _Context) -> Check:
    names = tuple(arg)
    return lambda v: not isinstance(v, dict) or all(n in v for n in names)


def _items(arg: Any, c: _Context) -> Check:
    if "prefixItems" in c.schema:
        raise Unsupported("prefixItems")
    item = c.build(arg, c.base)
    return lambda v: not isinstance(v, list) or all(item(x) for x in v)


def _unique(arg: Any, c: _Context) -> Check:
    if not arg:
        return lambda v: True

    def check(v: Any) -> bool:
        if not isinstance(v, list):
            return True
        # Only lists of strings are decided here; JSON equality of other items (1 == 1.0,
        # 1 != true) is jsonschema's business.
        return all(isinstance(x, str) for x in v) and len(set(v)) == len(v)

    return check


def _enum(arg: Any, c: _Context) -> Check:
    if not all(isinstance(x, str) for x in arg):
        raise Unsupported("enum of non-strings")
    allowed = frozenset(arg)
    return lambda v: isinstance(v, str) and v in allowed


def _const(arg: Any, c: _Context) -> Check:
    if not isinstance(arg, str):
        raise Unsupported("const of a non-string")
    return lambda v: isinstance(v, str) and v == arg


def _count(kind: type | tuple[type, ...], op: Callable[[int, int], bool]) -> Maker:
    def maker(arg: Any, c: _Context) -> Check:
        return lambda v: not isinstance(v, kind) or op(len(v), arg)

    return maker


def _bound(op: Callable[[Any, Any], bool]) -> Maker:
    def maker(arg: Any, c: _Context) -> Check:
        def check(v: Any) -> bool:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return True
            return op(v, arg)

        return check

    return maker


def _pattern(arg: Any, c: _Context) -> Check:
    regex = re.compile(arg)
    return lambda v: not isinstance(v, str) or regex.search(v) is not None


def _format(arg: Any, c: _Context) -> Check:
    return lambda v: c.formats(v, arg)


def _ref(arg: Any, c: _Context) -> Check:
    target = c.ref(c.base, arg)
    return lambda v: target(v)


def _one_of(arg: Any, c: _Context) -> Check:
    options = [c.build(sub, c.base) for sub in arg]
    return lambda v: sum(1 for option in options if option(v)) == 1


def _any_of(arg: Any, c: _Context) -> Check:
    options = [c.build(sub, c.base) for sub in arg]
    return lambda v: any(option(v) for option in options)


def _if(arg: Any, c: _Context) -> Check:
    condition = c.build(arg, c.base)
    then = c.build(c.schema.get("then", True), c.base)
    otherwise = c.build(c.schema.get("else", True), c.base)
    return lambda v: then(v) if condition(v) else otherwise(v)


def _property_names(arg: Any, c: _Context) -> Check:
    names = c.build(arg, c.base)
    return lambda v: not isinstance(v, dict) or all(names(k) for k in v)


_KEYWORDS: dict[str, Maker] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "uniqueItems": _unique,
    "enum": _enum,
    "const": _const,
    "minItems": _count(list, lambda n, m: n >= m),
    "maxItems": _count(list, lambda n, m: n <= m),
    "minLength": _count(str, lambda n, m: n >= m),
    "maxLength": _count(str, lambda n, m: n <= m),
    "minProperties": _count(dict, lambda n, m: n >= m),
    "maxProperties": _count(dict, lambda n, m: n <= m),
    "minimum": _bound(lambda v, m: v >= m),
    "maximum": _bound(lambda v, m: v <= m),
    "pattern": _pattern,
    "format": _format,
    "$ref": _ref,
    "oneOf": _one_of,
    "anyOf": _any_of,
    "if": _if,
    "propertyNames": _property_names,
}
