"""The GitOps kit for real: pre-commit runs the ``jcstate-validate`` hook in a scaffolded repo.

Two forms, both through ``git commit`` with the hook pre-commit installed:

- the hook of this repository's ``.pre-commit-hooks.yaml``, the way a policy repo adds it:
  ``repos: [{repo: URL, rev: REV, hooks: [{id: jcstate-validate}]}]``. The URL is a local git
  clone of this source tree (pre-commit takes a path where it takes a URL), so pre-commit
  clones it, builds its own virtualenv and pip-installs jcstate from it (dependencies come
  from the package index: about half a minute);
- the scaffold's default ``repo: local`` hook that runs the jcstate on PATH (seconds).

A good commit goes through; a broken policy is refused with ``file:line:col: message`` and the
commit is not made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from jcstate.cli import main

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SKIP_DIRS = {"__pycache__", "build", "dist"}


def _env(home: Path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(home),
        "PRE_COMMIT_HOME": str(home / "pre-commit-cache"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Policy Admin",
        "GIT_AUTHOR_EMAIL": "admin@example.invalid",
        "GIT_COMMITTER_NAME": "Policy Admin",
        "GIT_COMMITTER_EMAIL": "admin@example.invalid",
        # pip (inside pre-commit) finds the package index as this machine's pip does
        **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "VIRTUALENV_"))},
        "LC_ALL": "C.UTF-8",
    }


def _git(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _source_clone(dest: Path, env: dict[str, str]) -> str:
    """This source tree (as it is on disk, not as last committed) as a git repo; its HEAD."""
    assert not (dest / ".git").exists()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")
        ]
        rel = Path(dirpath).relative_to(ROOT)
        for name in filenames:
            # A worktree's .git is a file naming the real git dir: copied, it would make the
            # clone's commits land in this checkout.
            if name == ".git" or name.endswith((".pyc", ".pyo")):
                continue
            (dest / rel).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dirpath, name), dest / rel / name)
    assert _git(dest, env, "init", "-q").returncode == 0
    assert Path(_git(dest, env, "rev-parse", "--absolute-git-dir").stdout.strip()) == dest / ".git"
    for args in (["add", "-A"], ["commit", "-q", "-m", "jcstate source"]):
        proc = _git(dest, env, *args)
        assert proc.returncode == 0, proc.stderr
    return _git(dest, env, "rev-parse", "HEAD").stdout.strip()


def _commit(repo: Path, env: dict[str, str], message: str) -> subprocess.CompletedProcess[str]:
    assert _git(repo, env, "add", "-A").returncode == 0
    return _git(repo, env, "commit", "-m", message)


def _break_policy(repo: Path) -> tuple[int, int]:
    """Misspell ``shell`` in the example; the (line, column) of the bad key, 1-based."""
    path = repo / "policies" / "example.yaml"
    lines = path.read_text().splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.lstrip().startswith("shell:") and "{{" in line:  # the user's, not vars
            lines[number] = line.replace("shell:", "shel:", 1)
            path.write_text("".join(lines))
            return number + 1, line.index("shell:") + 1
    raise AssertionError("the example has no user with a templated shell")


def _scaffold_and_check(repo: Path, env: dict[str, str], *init_args: str) -> None:
    assert main(["init", str(repo), *init_args]) == 0
    assert _git(repo, env, "init", "-q", "-b", "main").returncode == 0
    install = subprocess.run(
        [str(BIN / "pre-commit"), "install"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    good = _commit(repo, env, "scaffold")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "jcstate validate" in good.stdout + good.stderr  # the hook ran
    assert "Passed" in good.stdout + good.stderr
    head = _git(repo, env, "rev-parse", "HEAD").stdout

    line, column = _break_policy(repo)
    bad = _commit(repo, env, "typo")
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0, output
    assert "Failed" in output
    assert (
        f"policies/example.yaml:{line}:{column}: unknown field 'shel' in users[0]; "
        "did you mean 'shell'?"
    ) in output, output
    assert _git(repo, env, "rev-parse", "HEAD").stdout == head  # refused: no new commit


def test_local_hook_of_the_scaffold(tmp_path: Path):
    env = _env(tmp_path)
    _scaffold_and_check(tmp_path / "policies-repo", env)


def test_hook_from_this_repository(tmp_path: Path):
    env = _env(tmp_path)
    source = tmp_path / "jcstate-src"
    source.mkdir()
    rev = _source_clone(source, env)
    assert (source / ".pre-commit-hooks.yaml").is_file()
    repo = tmp_path / "policies-repo"
    _scaffold_and_check(repo, env, "--hook-repo", str(source), "--hook-rev", rev)
    # The hook ran from pre-commit's own environment, not from the jcstate on PATH.
    envs = list((tmp_path / "pre-commit-cache").glob("repo*/py_env-*/bin/jcstate"))
    assert envs, sorted(p.name for p in (tmp_path / "pre-commit-cache").iterdir())
