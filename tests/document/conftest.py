"""Shared helpers of the document tests: write YAML into a temp repo and load it."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from jcstate.document import Policy, validate_paths
from jcstate.document.loader import load_text
from jcstate.document.schema import check_schema
from jcstate.errors import Problem


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., str]:
    """write("a.yaml", text) → the path of a new file under tmp_path (text is dedented)."""

    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    return _write


@pytest.fixture
def problems_of(write: Callable[..., str]) -> Callable[[str], list[Problem]]:
    """problems_of(yaml text) → every problem validate_paths reports for that one file."""

    def _problems(text: str) -> list[Problem]:
        _, problems = validate_paths([write("policy.yaml", text)])
        return problems

    return _problems


def policies(text: str, file: str = "p.yaml") -> list[Policy]:
    """Schema-valid policies from YAML text (fails the test on any load or schema problem)."""
    docs, problems = load_text(textwrap.dedent(text), file)
    assert problems == []
    out = []
    for doc in docs:
        found, _ = check_schema(doc)
        assert found == []
        out.append(Policy.from_data(doc.data, doc.positions))
    return out


@pytest.fixture
def load_policies() -> Callable[..., list[Policy]]:
    return policies
