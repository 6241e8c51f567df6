"""Data-driven: every file under tests/fixtures/documents/invalid/ lists the exact problems it
must produce (``# expect: LINE:COL: message prefix``); every file under valid/ and the example
repos must validate clean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jcstate.document import validate_paths

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "documents"
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$")


def _cases(folder: str) -> list[Path]:
    return sorted((FIXTURES / folder).glob("*.yaml"))


@pytest.mark.parametrize("path", _cases("invalid"), ids=lambda p: p.stem)
def test_invalid_fixture_reports_exactly_its_expected_problems(path: Path) -> None:
    expected = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = EXPECT.match(line)
        if match:
            expected.append((int(match[1]), int(match[2]), match[3]))
    assert expected, f"{path.name} has no '# expect:' lines"

    repo, problems = validate_paths([str(path)])

    assert repo is None
    got = [(p.line, p.column, p.message) for p in problems]
    assert all(p.file == str(path) for p in problems)
    assert len(got) == len(expected), "\n".join(str(p) for p in problems)
    for (line, column, message), (want_line, want_column, prefix) in zip(
        sorted(got), sorted(expected), strict=True
    ):
        assert (line, column) == (want_line, want_column), message
        assert message.startswith(prefix), message


@pytest.mark.parametrize("path", _cases("valid"), ids=lambda p: p.stem)
def test_valid_fixture_has_no_problem(path: Path) -> None:
    repo, problems = validate_paths([str(path)])
    assert problems == []
    assert repo is not None and repo.policies


@pytest.mark.parametrize(
    "folder", sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir()), ids=lambda p: p.name
)
def test_example_repo_validates_clean(folder: Path) -> None:
    repo, problems = validate_paths([str(folder)])
    assert problems == []
    assert repo is not None and len(repo.policies) >= 2
