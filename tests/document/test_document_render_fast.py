"""The Jinja2-free fast path renders exactly what the sandbox would, or steps aside."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jcstate.document.render import _fast_render
from jcstate.document.sandbox import environment

names = st.sampled_from(["shell", "team", "n", "b", "items", "keys", "x_1", "missing"])
leaves = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
contexts = st.fixed_dictionaries(
    {
        "vars": st.dictionaries(
            names, st.one_of(leaves, st.dictionaries(names, leaves, max_size=3))
        ),
        "device": st.fixed_dictionaries({"hostname": st.text(max_size=8)}),
    }
)
refs = st.lists(names, min_size=1, max_size=2).map(lambda p: "vars." + ".".join(p))
texts = st.text(alphabet="ab /-{}%#.", max_size=6)


@given(contexts, st.lists(st.tuples(texts, refs), min_size=1, max_size=3), texts)
def test_fast_path_matches_jinja_or_declines(ctx: dict[str, Any], parts: Any, tail: str) -> None:
    source = "".join(f"{text}{{{{ {ref} }}}}" for text, ref in parts) + tail
    fast = _fast_render(source, ctx)
    if fast is None:
        return
    assert fast == environment().from_string(source).render(ctx)


def test_common_cases_take_the_fast_path() -> None:
    ctx = {"vars": {"shell": "/bin/bash", "uid": 1501}, "device": {"hostname": "eng-1"}}
    assert _fast_render("{{ vars.shell }}", ctx) == "/bin/bash"
    assert _fast_render("Bob ({{device.hostname}}) {{ vars.uid }}", ctx) == "Bob (eng-1) 1501"
    assert _fast_render("{{ vars.nope }}", ctx) is None  # the sandbox reports it, with position
    assert _fast_render("{{ vars.shell | upper }}", ctx) is None
