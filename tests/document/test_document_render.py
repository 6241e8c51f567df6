"""Rendering: value by value, sandboxed, strict, with positions; integers for uid/gid only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jcstate.document import Device, DocumentError, Policy, Repo
from jcstate.document.loader import Positions
from jcstate.document.render import render_spec, template_problems

POSITIONS = Positions("f.yaml", values={("spec", "x"): (7, 9)})
CONTEXT = {
    "vars": {"shell": "/bin/bash", "uid": "1501", "names": ["a", "b"]},
    "device": {"id": "d1", "hostname": "eng-1", "os": "linux", "labels": {"team": "eng"}},
    "facts": {"memory": 4096},
}


def _render(template: str) -> tuple[Any, list[str]]:
    out, problems = render_spec({"x": template}, POSITIONS, CONTEXT)
    return out["x"], [str(p) for p in problems]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ vars.shell }}", "/bin/bash"),
        ("/home/{{ device.hostname }}", "/home/eng-1"),
        ("{{ device.labels.team | upper }}", "ENG"),
        ("{{ facts.memory // 1024 }}", "4"),
        ("{% for i in vars.names %}{{ i }}{% endfor %}", "ab"),
        ("{{ vars.names | join(',') }}", "a,b"),
        ("{{ 'a: b\\nc: [d]' }}", "a: b\nc: [d]"),  # stays one string: no YAML injection
        ("no template here", "no template here"),
        ("{ not a template }", "{ not a template }"),
    ],
)
def test_renders_strings(template: str, expected: str) -> None:
    assert _render(template) == (expected, [])


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ vars.__class__ }}",
        "{{ vars.update({'shell': 'x'}) }}",
        "{{ vars.names.append('c') }}",
        "{{ ''.format.__globals__ }}",
        "{{ 'x' * 100000000 }}",
        "{{ 9 ** 99999999 }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ 'xx' | replace('x', 'xxxxxxxxxxxxxxxxxxxx') | replace('x', 'xxxxxxxxxxxxxxxxxxxx')"
        " | replace('x', 'xxxxxxxxxxxxxxxxxxxx') | replace('x', 'xxxxxxxxxxxxxxxxxxxx') }}",
    ],
)
def test_sandbox_escapes_and_huge_values_are_refused(template: str) -> None:
    value, problems = _render(template)
    assert value == template  # never a partial or leaked value
    assert len(problems) == 1
    assert problems[0].startswith("f.yaml:7:9: template refused by the sandbox")


@pytest.mark.parametrize(
    "template",
    [
        "{% include 'other.yaml' %}",
        "{% import 'x' as y %}{{ y }}",
        "{% extends 'base' %}",
        "{{ range(10) }}",
        "{{ lipsum() }}",
        "{{ cycler }}",
        "{{ 'x' | center(1000000) }}",
    ],
)
def test_no_loader_globals_or_risky_filters(template: str) -> None:
    value, problems = _render(template)
    assert value == template and len(problems) == 1
    assert problems[0].startswith("f.yaml:7:9: ")


def test_undefined_names_are_errors_at_the_value_position() -> None:
    assert _render("{{ vars.missing }}")[1] == [
        "f.yaml:7:9: template: undefined: 'dict object' has no attribute 'missing'"
    ]
    assert _render("{{ nothing }}")[1] == [
        "f.yaml:7:9: template: undefined: 'nothing' is undefined"
    ]
    assert _render("{{ device.labels.site }}")[1][0].startswith("f.yaml:7:9: template: undefined")


def test_uid_and_gid_accept_rendered_integers_only() -> None:
    positions = Positions("f.yaml")
    spec = {
        "users": [{"name": "a", "uid": "{{ vars.uid }}", "fullName": "{{ vars.uid }}"}],
        "groups": [{"name": "g", "gid": "{{ vars.shell }}"}],
    }
    out, problems = render_spec(spec, positions, CONTEXT)
    assert out["users"][0]["uid"] == 1501  # converted
    assert out["users"][0]["fullName"] == "1501"  # every other field stays a string
    assert [p.message for p in problems] == ["gid must render to an integer, got '/bin/bash'"]


def test_validation_checks_syntax_without_rendering() -> None:
    spec = {"a": "{{ undefined_is_fine_here }}", "b": ["{{ broken "], "c": {"d": "{% if %}"}}
    positions = Positions("f.yaml", values={("spec", "b", 0): (3, 5), ("spec", "c", "d"): (4, 8)})
    problems = template_problems(spec, positions)
    assert [(p.line, p.column) for p in problems] == [(3, 5), (4, 8)]
    assert all(p.message.startswith("template syntax error") for p in problems)


def test_document_for_reports_render_errors_with_file_positions(
    load_policies: Callable[..., list[Policy]],
) -> None:
    (policy,) = load_policies(
        """\
        apiVersion: jcstate/v1
        kind: Policy
        metadata: {name: p}
        selector: {os: [linux]}
        spec:
          users:
            - name: alice
              home: "/home/{{ device.labels.site }}"
        """,
        file="pol.yaml",
    )
    with pytest.raises(DocumentError) as caught:
        Repo([policy]).document_for(Device(hostname="h", os="linux"))
    assert [str(p) for p in caught.value.problems] == [
        "pol.yaml:8:13: template: undefined: 'dict object' has no attribute 'site'"
    ]
    document = Repo([policy]).document_for(Device(hostname="h", os="linux", labels={"site": "x"}))
    assert document.spec["users"][0]["home"] == "/home/x"


@given(
    st.lists(
        st.one_of(
            st.text(alphabet="ab {}%#-/.", max_size=6),
            st.from_regex(r"\A\{\{ ?[a-z_]{1,5}(\.[a-z_]{1,4}){0,2} ?\}\}\Z"),
        ),
        max_size=5,
    ).map("".join)
)
def test_fast_syntax_path_never_accepts_what_jinja_rejects(source: str) -> None:
    """The regex shortcut of template_problems may only accept templates Jinja2 compiles."""
    from jinja2 import TemplateSyntaxError

    from jcstate.document.render import _SIMPLE
    from jcstate.document.sandbox import environment

    if _SIMPLE.fullmatch(source):
        try:
            environment().compile(source)
        except TemplateSyntaxError as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{source!r} passed the shortcut but Jinja2 says: {exc}")
