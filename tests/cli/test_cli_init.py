"""``jcstate init DIR``: the scaffold validates, its files parse, and nothing is overwritten."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from jcstate import __version__
from jcstate.cli import main
from jcstate.cli.init import scaffold_files
from jcstate.document import validate_paths

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_scaffold_validates_and_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    repo = tmp_path / "policy-repo"
    assert main(["init", str(repo)]) == 0
    assert {
        "README.md",
        "policies/example.yaml",
        ".pre-commit-config.yaml",
        ".github/workflows/jcstate.yml",
        ".gitlab-ci.yml",
        "schemas/policy.schema.json",
        "schemas/user.schema.json",
    } <= _files(repo)
    capsys.readouterr()
    loaded, problems = validate_paths([str(repo / "policies")])
    assert problems == [] and loaded is not None
    assert [p.name for p in loaded.policies] == ["example-linux"]
    assert main(["validate", str(repo / "policies")]) == 0
    assert capsys.readouterr().out.strip() == "1 policies in 1 files: ok"


def test_example_points_editors_at_the_written_schema(tmp_path: Path):
    main(["init", str(tmp_path)])
    first = (tmp_path / "policies" / "example.yaml").read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, first
    schema = (tmp_path / "policies" / match.group(1)).resolve()
    assert schema.read_bytes() == (SCHEMAS / "policy.schema.json").read_bytes()


def test_ci_examples_validate_dry_run_and_push(tmp_path: Path):
    main(["init", str(tmp_path)])
    github = yaml.safe_load((tmp_path / ".github/workflows/jcstate.yml").read_text())
    steps = {
        job: " ".join(str(s.get("run", "")) for s in spec["steps"])
        for job, spec in github["jobs"].items()
    }
    assert "jcstate validate policies" in steps["validate"]
    assert "jcstate push --dry-run policies" in steps["dry-run"]
    assert "GITHUB_STEP_SUMMARY" in steps["dry-run"]
    assert "pull_request" in github["jobs"]["dry-run"]["if"]
    assert 'jcstate push policies --message "$MESSAGE" --commit "$GITHUB_SHA"' in steps["push"]
    assert "refs/heads/main" in github["jobs"]["push"]["if"]
    # The commit message reaches the shell through the environment, never pasted into it.
    assert "${{" not in steps["push"]
    assert f"jcstate=={__version__}" in steps["validate"]

    gitlab = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    assert gitlab["validate"]["script"] == ["jcstate validate policies"]
    assert "merge_request_event" in gitlab["dry-run"]["rules"][0]["if"]
    assert gitlab["dry-run"]["artifacts"]["paths"] == ["dry-run.txt"]
    assert gitlab["push"]["script"] == [
        'jcstate push policies --message "$CI_COMMIT_TITLE" --commit "$CI_COMMIT_SHA"'
    ]
    assert "CI_DEFAULT_BRANCH" in gitlab["push"]["rules"][0]["if"]


def test_precommit_config_forms():
    local = yaml.safe_load(scaffold_files()[".pre-commit-config.yaml"])
    hook = local["repos"][0]["hooks"][0]
    assert local["repos"][0]["repo"] == "local"
    assert (hook["id"], hook["entry"], hook["language"]) == (
        "jcstate-validate",
        "jcstate validate",
        "system",
    )
    remote = yaml.safe_load(
        scaffold_files("https://git.example/jc state.git", "v9")[".pre-commit-config.yaml"]
    )
    assert remote["repos"][0]["repo"] == "https://git.example/jc state.git"
    assert remote["repos"][0]["rev"] == "v9"
    assert remote["repos"][0]["hooks"] == [{"id": "jcstate-validate", "args": ["policies"]}]


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path, capsys):
    (tmp_path / ".git").mkdir()  # a fresh `git init` is fine
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "example.yaml").write_text("mine\n")
    before = _files(tmp_path)
    assert main(["init", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "policies/example.yaml already exists; nothing was written" in err
    assert _files(tmp_path) == before
    assert (tmp_path / "policies" / "example.yaml").read_text() == "mine\n"


def test_init_into_a_file_is_refused(tmp_path: Path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["init", str(target)]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_init_hook_rev_needs_hook_repo(tmp_path: Path, capsys):
    assert main(["init", str(tmp_path / "r"), "--hook-rev", "v1"]) == 1
    assert "--hook-rev needs --hook-repo" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")
