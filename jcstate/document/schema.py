"""Step 2: check each document against the JSON Schema (draft 2020-12) shipped in schemas/.

The schemas are the format's reference (editors show their titles and descriptions); this
module only turns jsonschema's errors into problems a user can act on: the exact place of the
offending value (or of the key, for unknown fields), the path in ``users[0].shell`` form, and a
suggestion when a name is close to a known one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from jcstate.document.loader import Loaded, Path
from jcstate.document.oneline import quote
from jcstate.document.precheck import Check, Unsupported, compile_schema
from jcstate.errors import Problem

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError
    from referencing import Registry

__all__ = [
    "FORMATS",
    "SCHEMA_FILES",
    "check_schema",
    "describe_path",
    "precheck",
    "schemas",
    "validator",
]

SCHEMA_FILES = (
    "policy.schema.json",
    "selector.schema.json",
    "group.schema.json",
    "user.schema.json",
    "sshMfa.schema.json",
    "fileVault.schema.json",
    "command.schema.json",
)

_TEMPLATE = re.compile(r"\{[{%]")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NO_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})")


def _close_matches(word: str, possibilities: Sequence[str], **kwargs: Any) -> list[str]:
    import difflib  # only an error with a suggestion needs it

    return difflib.get_close_matches(word, possibilities, **kwargs)


@cache
def schemas() -> dict[str, dict[str, Any]]:
    """Every shipped schema, by file name."""
    # Beside the package's __init__, as pip installs it: importlib.resources would cost
    # tempfile, shutil, random and zipfile imports (about 6 ms of every plan) for the same read.
    import jcstate.schemas

    folder = os.path.dirname(jcstate.schemas.__file__ or "")
    out = {}
    for name in SCHEMA_FILES:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            out[name] = json.load(f)
    return out


def _is_date(value: object) -> bool:
    """format "date": YYYY-MM-DD, a real day. Templates are checked after rendering."""
    if not isinstance(value, str) or _TEMPLATE.search(value):
        return True
    if not _DATE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_date_time(value: object) -> bool:
    """format "date-time": RFC 3339 with a time zone."""
    if not isinstance(value, str) or _TEMPLATE.search(value):
        return True
    if not _DATE_TIME.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return True


# The formats we use, checked with the standard library (no optional packages). Any other
# format is an annotation only, as in jsonschema's default.
FORMATS: dict[str, Callable[[object], bool]] = {"date": _is_date, "date-time": _is_date_time}


@cache
def validator() -> Draft202012Validator:
    """The jsonschema validator of policy.schema.json, per-kind schemas registered by $id.

    Imported on first use: jsonschema only runs to explain a document the precheck rejected.
    """
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    docs = schemas()
    registry: Registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in docs.values()
    )
    checker = FormatChecker(formats=())
    for name, test in FORMATS.items():
        checker.checks(name)(test)
    return Draft202012Validator(
        docs["policy.schema.json"], registry=registry, format_checker=checker
    )


@cache
def precheck() -> Check | None:
    """The compiled yes/no check (see precheck.py), or None if the schema outgrew it."""
    docs = schemas()
    try:
        return compile_schema(
            docs["policy.schema.json"],
            {doc["$id"]: doc for doc in docs.values()},
            lambda value, name: FORMATS.get(name, lambda v: True)(value),
        )
    except Unsupported:
        return None


def check_schema(doc: Loaded) -> tuple[list[Problem], list[Path]]:
    """Every schema problem of one loaded document, at the place it was written.

    Also returns the paths of the offending values, so that the caller can set them aside and
    still run the semantic rules on the rest of the document.
    """
    problems: list[Problem] = []
    paths: list[Path] = []
    fast = precheck()
    if fast is not None and fast(doc.data):
        return problems, paths
    for error in validator().iter_errors(doc.data):
        problems.extend(_problems(error, doc))
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            paths.extend((*path, key) for key in error.instance if key not in known)
        else:
            paths.append(path)
    return problems, paths


def describe_path(path: Sequence[str | int]) -> str:
    """``("spec", "users", 0, "shell")`` → ``users[0].shell`` (spec is implied)."""
    parts = list(path)
    if parts[:1] == ["spec"] and len(parts) > 1:
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the document"


def _problems(error: ValidationError, doc: Loaded) -> list[Problem]:
    path = tuple(error.absolute_path)
    where = describe_path(path)
    pos = doc.positions
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}

    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in known:
                continue
            message = f"unknown field {quote(key)} in {where}"
            close = _close_matches(key, known, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean '{close[0]}'?"
            elif known:
                message += f"; allowed: {', '.join(known)}"
            out.append(pos.problem((*path, key), message, key=True))
        return out
    if "propertyNames" in error.schema_path and isinstance(error.instance, str):
        message = f"{quote(error.instance)} is not allowed as a key in {where}"
        if schema.get("pattern"):
            message += f"; keys must match {schema['pattern']}"
        return [pos.problem((*path, error.instance), message, key=True)]
    if kind == "required":
        missing = str(error.validator_value)
        if isinstance(error.validator_value, list) and isinstance(error.instance, dict):
            names = [k for k in error.validator_value if k not in error.instance]
            missing = ", ".join(f"'{k}'" for k in names)
        return [pos.problem(path, f"missing required field {missing} in {where}")]
    return [pos.problem(path, f"{where}: {_message(error, schema)}")]


def _message(error: ValidationError, schema: dict[str, Any]) -> str:
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind in ("pattern",) and "errorMessage" in schema:
        return str(schema["errorMessage"])
    if kind == "type":
        wanted = value if isinstance(value, list) else [value]
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in wanted)
        hint = ""
        if "string" in wanted and isinstance(instance, (bool, int, float)):
            hint = " (quote it to keep it text)"
        return f"expected {expected}, got {_show(instance)}{hint}"
    if kind == "enum":
        choices = ", ".join(str(c) for c in value)
        text = f"{_show(instance)} is not one of {choices}"
        close = _close_matches(str(instance), [str(c) for c in value], n=1)
        return text + (f"; did you mean '{close[0]}'?" if close else "")
    if kind == "const":
        return f"must be '{value}', got {_show(instance)}"
    if kind == "minimum":
        return f"must be at least {value}, got {instance}"
    if kind == "maximum":
        return f"must be at most {value}, got {instance}"
    if kind == "minItems":
        return f"needs at least {value} item{'s' if value != 1 else ''}"
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters"
    if kind == "maxLength":
        return f"is longer than {value} characters"
    if kind == "minProperties":
        return f"needs at least {value} field{'s' if value != 1 else ''}"
    if kind == "uniqueItems":
        return "lists the same item twice"
    if kind == "format" and value == "date-time" and _NO_OFFSET.fullmatch(str(instance)):
        return (
            f"{_show(instance)} has no UTC offset: add Z (UTC) or +HH:MM, e.g. "
            f"{instance}Z; a time without one would be read in each device's own time zone"
        )
    if kind == "format":
        return f"{_show(instance)} is not a valid {value}" + (
            " (YYYY-MM-DD)" if value == "date" else " (RFC 3339, e.g. 2026-12-01T00:00:00Z)"
        )
    if kind == "pattern":
        return f"{_show(instance)} does not match {value}"
    if kind in ("oneOf", "anyOf"):
        fields = [b["required"][0] for b in value if isinstance(b, dict) and "required" in b]
        if len(fields) == len(value) and fields:
            return "set exactly one of " + " or ".join(f"'{f}'" for f in fields)
        return _alternatives(value, instance) or error.message
    return error.message


def _alternatives(branches: list[Any], instance: Any) -> str | None:
    """``'Never' is not a valid date (YYYY-MM-DD) or 'never'; did you mean 'never'?``.

    None when a branch is not simple enough to put in words (jsonschema's message then).
    """
    wanted: list[str] = []
    words: list[str] = []  # constants a near miss may be a typo of
    for branch in branches:
        if not isinstance(branch, dict):
            return None
        if "const" in branch:
            wanted.append(quote(branch["const"]))
            words.append(str(branch["const"]))
        elif "format" in branch:
            wanted.append(_FORMAT_WORDS.get(branch["format"], f"a {branch['format']}"))
        elif isinstance(branch.get("type"), str):
            wanted.append(_TYPE_WORDS.get(branch["type"], branch["type"]))
        else:
            return None
    text = f"{_show(instance)} is not {' or '.join(wanted)}"
    close = _close_matches(str(instance), words, n=1)
    return text + (f"; did you mean '{close[0]}'?" if close else "")


_FORMAT_WORDS = {
    "date": "a valid date (YYYY-MM-DD)",
    "date-time": "a valid date-time (RFC 3339, e.g. 2026-12-01T00:00:00Z)",
}


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return quote(value) if len(value) <= 60 else quote(value[:57] + "...")
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
