"""Step 3: render a policy's spec for one device, value by value (SPEC 3).

The YAML was parsed before anything is rendered, so only string values containing ``{{`` or
``{%`` are templates, a rendered value stays one string (a template cannot inject YAML), and an
error points at the value's own file:line:col. Templates compile in the sandboxed, strict and
bounded environment of sandbox.py.

Templates see ``vars`` (the policy's vars, literal), ``device`` (id, hostname, os, osVersion,
arch, labels) and ``facts``. Fields that must be integers (a user's ``uid``, a group's ``gid``)
accept a rendered string of digits and convert it; every other rendered value is a string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jcstate.document.loader import Path, Positions
from jcstate.document.oneline import quote
from jcstate.errors import Problem

if TYPE_CHECKING:
    from jinja2 import Template

__all__ = [
    "INTEGER_FIELDS",
    "is_template",
    "names",
    "render_spec",
    "template_problems",
]

INTEGER_FIELDS = {("users", "uid"), ("groups", "gid")}  # rendered digit strings become ints

_MARKERS = re.compile(r"\{[{%]")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def is_template(value: Any) -> bool:
    """Whether a value is a string that would be rendered."""
    return isinstance(value, str) and _MARKERS.search(value) is not None


def names(value: Any, name: str) -> bool:
    """Whether any template in ``value`` (a spec, walked) writes the variable ``name``.

    Sound for the sandbox: a template reaches a context variable only by writing its name
    (no ``globals()``, and ``self``'s private attributes are refused), so a spec whose
    templates never write ``facts`` renders the same with or without them.
    """
    pattern = re.compile(rf"\b{re.escape(name)}\b")

    def walk(item: Any) -> bool:
        if isinstance(item, dict):
            return any(walk(v) for v in item.values())
        if isinstance(item, list):
            return any(walk(v) for v in item)
        return is_template(item) and pattern.search(item) is not None

    return walk(value)


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Template:
    from jcstate.document.sandbox import environment

    return environment().from_string(source)


# Text around simple substitutions ({{ vars.shell }}, {{ device.labels.team }}) is the common
# case and always parses; recognising it avoids a Jinja2 parse per value during validation.
_TEXT = r"(?:[^{}]|\{(?![{%#]))*"  # no braces, except a "{" that starts no Jinja2 tag
_NAME = r"(?!not\b)[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"  # vars.shell
_SIMPLE = re.compile(_TEXT + r"(?:\{\{ *" + _NAME + r" *\}\}" + _TEXT + ")+")


@lru_cache(maxsize=4096)
def _syntax_error(source: str) -> str | None:
    if _SIMPLE.fullmatch(source):
        return None
    from jinja2 import TemplateSyntaxError

    from jcstate.document.sandbox import environment

    try:
        environment().compile(source)  # compiling (not just parsing) also catches unknown filters
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    return None


def template_problems(spec: Any, positions: Positions, base: Path = ("spec",)) -> list[Problem]:
    """Syntax errors in every template under ``spec``, without rendering anything."""
    problems: list[Problem] = []

    def visit(value: Any, path: Path) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, (*path, i))
        elif is_template(value):
            error = _syntax_error(value)
            if error:
                problems.append(positions.problem(path, error))

    visit(spec, base)
    return problems


def render_spec(
    spec: dict[str, Any],
    positions: Positions,
    context: dict[str, Any],
) -> tuple[dict[str, Any], list[Problem]]:
    """Render every template in ``spec`` with ``context`` (vars, device, facts)."""
    problems: list[Problem] = []

    def one(source: str, path: Path) -> Any:
        fast = _fast_render(source, context)
        if fast is not None:
            return _convert(fast, path, problems, positions)
        return jinja(source, path)

    def jinja(source: str, path: Path) -> Any:
        from jinja2 import TemplateError, TemplateSyntaxError
        from jinja2.exceptions import SecurityError, UndefinedError

        from jcstate.document.sandbox import MAX_OUTPUT

        try:
            text = _compiled(source).render(context)
        except UndefinedError as exc:
            problems.append(positions.problem(path, f"template: undefined: {exc.message}"))
            return source
        except SecurityError as exc:
            problems.append(positions.problem(path, f"template refused by the sandbox: {exc}"))
            return source
        except TemplateSyntaxError as exc:
            problems.append(positions.problem(path, f"template syntax error: {exc.message}"))
            return source
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            problems.append(positions.problem(path, f"template failed: {exc}"))
            return source
        if len(text) > MAX_OUTPUT:
            problems.append(positions.problem(path, f"template output over {MAX_OUTPUT} chars"))
            return source
        return _convert(text, path, problems, positions)

    rendered = _walk(spec, ("spec",), one)
    return rendered, problems


_SUBSTITUTION = re.compile(r"\{\{ *(" + _NAME + r") *\}\}")
_MISSING = object()


def _fast_render(source: str, context: dict[str, Any]) -> str | None:
    """Render ``text {{ vars.x }} text`` without Jinja2 (and without importing it).

    Only plain dict lookups that end on a string or an integer are done here, which Jinja2
    would render the same way (``str(value)``); anything else (a missing name, a name that is
    also a dict method, any other type) returns None and goes through the sandbox, which
    gives the same result or the proper error.
    """
    if not _SIMPLE.fullmatch(source):
        return None
    out: list[str] = []
    pos = 0
    for match in _SUBSTITUTION.finditer(source):
        value = _lookup(context, match.group(1))
        if value is _MISSING:
            return None
        out.append(source[pos : match.start()])
        out.append(str(value))
        pos = match.end()
    out.append(source[pos:])
    return "".join(out)


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for part in dotted.split("."):
        if not isinstance(value, dict) or hasattr(dict, part) or part not in value:
            return _MISSING
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return _MISSING
    return value


def _convert(text: str, path: Path, problems: list[Problem], positions: Positions) -> Any:
    """Integer fields take a rendered digit string; all else stays the rendered string."""
    if len(path) == 4 and (path[1], path[3]) in INTEGER_FIELDS:
        if _INTEGER.fullmatch(text):
            return int(text)
        problems.append(
            positions.problem(path, f"{path[3]} must render to an integer, got {quote(text[:40])}")
        )
    return text


def _walk(value: Any, path: Path, one: Callable[[str, Path], Any]) -> Any:
    if isinstance(value, dict):
        return {key: _walk(item, (*path, key), one) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, (*path, i), one) for i, item in enumerate(value)]
    if is_template(value):
        return one(value, path)
    return value
