"""The Jinja2 environment templates render in: sandboxed, strict, and bounded.

Jinja2's immutable sandbox (no access to Python internals, no mutation of vars), with
``StrictUndefined``, no loader (so no include/import/extends), autoescape off, no globals
(templates see only ``vars``, ``device`` and ``facts``), an allow-list of filters, and bounds
on everything that can build a huge value from a short template. Templates are written by
policy authors and rendered on the server for every device, so a careless (or hostile)
template must not be able to exhaust the server's memory.

This module is imported only when a template is compiled, which keeps Jinja2 out of runs
whose templates are all simple substitutions (see render.py).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["MAX_OUTPUT", "SAFE_FILTERS", "environment"]

MAX_OUTPUT = 64 * 1024  # characters a single value may render to

# Filters that cannot build a value much larger than their input. Left out: center, indent,
# wordwrap, truncate, format, filesizeformat (a width argument can allocate gigabytes), random
# (renders must be repeatable), and the HTML ones (autoescape is off anyway).
SAFE_FILTERS = frozenset(
    "abs attr capitalize count d default dictsort first float int items join last length "
    "list lower map max min reject rejectattr replace reverse round select selectattr sort "
    "string sum title tojson trim unique upper".split()
)
_BIG_NUMBER = re.compile(r"\d{6,}")  # a format width of 100000 or more


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on operators and calls that can build huge values."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_OUTPUT:
                raise SecurityError("argument too large in template call")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and format_map in templates: refuse huge widths before formatting."""
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and _BIG_NUMBER.search(owner):
            raise SecurityError("number too large in a template format string")
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large in template")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    if len(seq) * count > MAX_OUTPUT:
                        raise SecurityError("template would build a value that is too large")
            return operator.mul(left, right)
        if operator_name == "%":
            if isinstance(left, str) and _BIG_NUMBER.search(left):
                raise SecurityError("number too large in a template format string")
            return operator.mod(left, right)
        return super().call_binop(context, operator_name, left, right)


def _replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    """The replace filter, refusing results over MAX_OUTPUT before building them."""
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None:
        hits = min(hits, count)
    if len(text) + hits * (len(new) - len(old)) > MAX_OUTPUT:
        raise SecurityError("template would build a value that is too large")
    return text.replace(old, new, -1 if count is None else count)


@cache
def environment() -> _Environment:
    """The one environment every template is compiled in."""
    env = _Environment(undefined=StrictUndefined, autoescape=False, loader=None)
    env.globals.clear()  # only vars, device and facts: no range, lipsum, cycler, namespace
    env.filters = {name: f for name, f in env.filters.items() if name in SAFE_FILTERS}
    env.filters["replace"] = _replace
    return env
