"""Per-OS name rules, checked with generated names (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from jcstate.document.names import NAME_RULES, name_problem

LINUX = re.compile(r"[a-z_][a-z0-9_-]*[$]?")
SHELL_METACHARACTERS = set(";|&$`\\\"'<>()*?[]{}!~# \t\n/=:,")


@given(st.text(max_size=40))
def test_linux_accepts_exactly_the_shadow_utils_rule(name: str) -> None:
    expected = bool(LINUX.fullmatch(name)) and len(name) <= 32
    assert (name_problem("linux", name) is None) is expected


@given(st.from_regex(r"\A[a-z_][a-z0-9_-]{0,30}\Z"))
def test_linux_accepts_generated_portable_names(name: str) -> None:
    assert name_problem("linux", name) is None


@given(st.text(min_size=1, max_size=16), st.sampled_from(sorted(SHELL_METACHARACTERS - {"$"})))
def test_shell_metacharacters_are_rejected_on_linux_and_darwin(name: str, char: str) -> None:
    for position in (0, len(name) // 2, len(name)):
        bad = name[:position] + char + name[position:]
        assert name_problem("linux", bad) is not None
        assert name_problem("darwin", bad) is not None


@given(st.text(min_size=1, max_size=8))
def test_dollar_only_at_the_end_on_linux(name: str) -> None:
    assert name_problem("linux", "a$" + name) is not None


@given(st.text(max_size=30))
def test_windows_rule(name: str) -> None:
    forbidden = set('"/\\[]:;|=,+*?<>@')
    expected = (
        0 < len(name) <= 20
        and not (set(name) <= {".", " "})
        and not any(c in forbidden or ord(c) < 32 or ord(c) == 127 for c in name)
    )
    assert (name_problem("windows", name) is None) is expected


@given(st.sampled_from(sorted('"/\\[]:;|=,+*?<>@')), st.text(min_size=1, max_size=5))
def test_windows_rejects_its_forbidden_characters(char: str, rest: str) -> None:
    assert name_problem("windows", "a" + char + rest) is not None


def test_examples_per_os() -> None:
    assert name_problem("linux", "alice") is None
    assert name_problem("linux", "machine$") is None
    assert name_problem("linux", "Alice") is not None
    assert name_problem("linux", "9lives") is not None
    assert name_problem("linux", "a" * 33) == "is longer than 32 characters"
    assert name_problem("darwin", "Alice.Smith") is None
    assert name_problem("darwin", "-x") is not None
    assert name_problem("windows", "Alice Smith") is None
    assert name_problem("windows", "...") is not None
    assert name_problem("windows", "a" * 21) == "is longer than 20 characters"
    assert name_problem("plan9", "anything") is None  # unknown OS: no rule to apply


def test_every_os_has_a_rule() -> None:
    assert set(NAME_RULES) == {"linux", "darwin", "windows"}
