"""Problem messages stay one terminal line whatever text a document puts in them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from jcstate.cli import main
from jcstate.document.oneline import one_line, quote
from jcstate.errors import Problem

NEWLINE_NAME = "root\nx"
ESCAPE_NAME = "eve\x1b[2Jwiped"


@given(st.text(max_size=40))
def test_one_line_leaves_nothing_a_terminal_would_act_on(text: str) -> None:
    shown = one_line(text)
    assert shown.isprintable()
    assert len(shown.splitlines()) <= 1  # splitlines also breaks at \x1c-\x1e, \x85, \u2028
    assert "\x1b" not in shown


@given(st.text(max_size=40))
def test_quote_is_one_quoted_line(text: str) -> None:
    shown = quote(text)
    assert shown.startswith("'") and shown.endswith("'")
    assert shown.isprintable()


def test_printable_text_is_unchanged() -> None:
    assert quote("alice") == "'alice'"
    assert one_line("users[0].name: 'alice' is fine, é and ü too") == (
        "users[0].name: 'alice' is fine, é and ü too"
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (NEWLINE_NAME, r"'root\nx'"),
        (ESCAPE_NAME, r"'eve\x1b[2Jwiped'"),
        ("a\u2028b", r"'a\u2028b'"),  # a line separator for splitlines and some terminals
        ("a\u202eb", r"'a\u202eb'"),  # right-to-left override: text that reads backwards
        ("a\tb", r"'a\tb'"),
    ],
)
def test_control_characters_are_written_as_escapes(text: str, shown: str) -> None:
    assert quote(text) == shown


def test_a_written_backslash_differs_from_an_escape() -> None:
    """A name spelled with a backslash and 'n' must not read like one holding a newline."""
    assert quote("root\\nx") == r"'root\\nx'" != quote(NEWLINE_NAME)


def _policy(users: list[dict[str, str]], groups: list[dict[str, object]] | None = None) -> str:
    spec: dict[str, object] = {"users": users}
    if groups is not None:
        spec["groups"] = groups
    return yaml.safe_dump(
        {
            "apiVersion": "jcstate/v1",
            "kind": "Policy",
            "metadata": {"name": "names"},
            "selector": {"os": ["linux"]},
            "spec": spec,
        }
    )


def _assert_one_line_each(problems: list[Problem]) -> None:
    for problem in problems:
        text = str(problem)
        assert text.splitlines() == [text], text
        assert "\x1b" not in text


def test_invalid_names_give_one_problem_line_each(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    problems = problems_of(_policy([{"name": NEWLINE_NAME}, {"name": ESCAPE_NAME}]))
    assert [p.message.split(" on linux:")[0] for p in problems] == [
        r"name 'root\nx'",
        r"name 'eve\x1b[2Jwiped'",
    ]
    _assert_one_line_each(problems)


def test_other_rules_quote_names_the_same_way(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """Duplicates and a uid clash name the user; the message still holds one line."""
    users = [
        {"name": ESCAPE_NAME, "uid": 7},
        {"name": ESCAPE_NAME},
        {"name": NEWLINE_NAME, "uid": 7},
    ]
    problems = problems_of(_policy(users))
    messages = [p.message for p in problems]
    assert any(m.startswith(r"user 'eve\x1b[2Jwiped' is declared twice") for m in messages)
    assert any(
        r"uid 7 of user 'root\nx' is already used by 'eve\x1b[2Jwiped'" in m for m in messages
    ), messages
    _assert_one_line_each(problems)


def test_schema_messages_quote_keys_and_values(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    problems = problems_of(_policy([{"name": "alice", "shell\x1b]0;pwned\x07": "/bin/sh"}]))
    assert len(problems) == 1, problems
    assert problems[0].message.startswith(r"unknown field 'shell\x1b]0;pwned\x07' in users[0]")
    _assert_one_line_each(problems)


def test_validate_prints_one_line_per_problem(
    write: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write("policy.yaml", _policy([{"name": NEWLINE_NAME}, {"name": ESCAPE_NAME}]))
    assert main(["validate", path]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith(f"{path}:") and ": name '" in line for line in lines), lines
    assert "\x1b" not in out.out + out.err
