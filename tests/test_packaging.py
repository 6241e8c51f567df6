"""Packages: ``python -m build`` makes an sdist and a wheel from a copy of the source; the wheel
holds the package, its schemas and modules (as ``jcstate.schemas`` / ``jcstate.modules``), the
migrations and every data file of the tree, and no tests, caches or compiled files; installed
into a fresh venv (pip, and pipx where present) it answers ``--version`` and validates the
examples, from the installed copy, not this checkout.

The build runs once per session of this module (about half a minute; it needs the package
index for the isolated build environment, as CI has).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jcstate import __version__

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    "*.db",
)


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = base / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], cwd=base)
    yield out


def _wheel(dist: Path) -> Path:
    [wheel] = dist.glob("jcstate-*.whl")
    return wheel


def _data_files() -> set[str]:
    """Every file under jcstate/, modules/, schemas/ that is not Python source, as it is named
    inside the wheel."""
    found = set()
    for top, inside in (
        ("jcstate", "jcstate"),
        ("modules", "jcstate/modules"),
        ("schemas", "jcstate/schemas"),
    ):
        for path in (ROOT / top).rglob("*"):
            if (
                path.is_file()
                and "__pycache__" not in path.parts
                and path.suffix not in (".py", ".pyc")
            ):
                found.add(f"{inside}/{path.relative_to(ROOT / top).as_posix()}")
    return found


def test_the_wheel_holds_the_package_and_no_tests_or_caches(dist: Path):
    wheel = _wheel(dist)
    assert wheel.name == f"jcstate-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"jcstate/__init__.py", "jcstate/cli/__init__.py", "jcstate/agent/loop.py"} <= names
    assert "jcstate/schemas/policy.schema.json" in names
    assert "jcstate/modules/users/__init__.py" in names
    assert "jcstate/server/migrations/env.py" in names
    assert "jcstate/server/migrations/script.py.mako" in names
    assert "jcstate/server/migrations/versions/0001_initial.py" in names
    # every module folder and every data file of the tree ships
    for folder in (ROOT / "modules").iterdir():
        if (folder / "__init__.py").exists():
            assert f"jcstate/modules/{folder.name}/__init__.py" in names, folder.name
    missing = _data_files() - names
    assert not missing, f"data files not in the wheel (add them to package-data): {missing}"
    for name in names:
        assert not name.startswith(("tests/", "bench/", "docs/", "examples/")), name
        assert "__pycache__" not in name and not name.endswith((".pyc", ".pyo", ".db")), name
    top = {name.split("/")[0] for name in names}
    assert top == {"jcstate", f"jcstate-{__version__}.dist-info"}
    entry = zipfile.ZipFile(wheel).read(f"jcstate-{__version__}.dist-info/entry_points.txt")
    assert b"jcstate = jcstate.cli:main" in entry


def test_the_sdist_is_the_whole_source(dist: Path):
    [sdist] = dist.glob("jcstate-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "setup.py", "README.md", "LICENSE"} <= names
    assert "schemas/policy.schema.json" in names and "modules/users/__init__.py" in names
    assert "docs/deploy.md" in names and "tests/test_packaging.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def _check_installed(jcstate: Path, python: Path | None, cwd: Path) -> None:
    assert run([str(jcstate), "--version"], cwd=cwd).stdout.strip() == f"jcstate {__version__}"
    examples = ROOT / "examples"
    checked = run([str(jcstate), "validate", str(examples)], cwd=cwd)
    assert "ok" in checked.stdout.lower() or checked.stdout.strip()
    broken = cwd / "broken.yaml"
    broken.write_text(
        "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: x}\nspec:\n  users: 3\n"
    )
    bad = subprocess.run(
        [str(jcstate), "validate", str(broken)], capture_output=True, text=True, cwd=cwd
    )
    assert bad.returncode == 1 and f"{broken}:5:" in bad.stdout + bad.stderr
    if python is not None:  # the code that ran is the installed copy, not this checkout
        where = run([str(python), "-c", "import jcstate; print(jcstate.__file__)"], cwd=cwd)
        assert str(ROOT) not in where.stdout and "site-packages" in where.stdout


def test_the_wheel_installs_into_a_clean_venv(dist: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    run([*pip, f"{_wheel(dist)}[server]"], cwd=tmp_path)
    _check_installed(venv / "bin" / "jcstate", venv / "bin" / "python", tmp_path)
    # the server extra: the migrations ship and run from the wheel
    url = f"sqlite:///{tmp_path}/migrated.db"
    code = f"from jcstate.server import db; db.migrate(db.connect({url!r})); print('ok')"
    assert run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path).stdout.strip() == "ok"


@pytest.mark.skipif(shutil.which("pipx") is None, reason="pipx missing (apt: pipx)")
def test_the_wheel_installs_with_pipx(dist: Path, tmp_path: Path):
    env = {
        **os.environ,
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    run(["pipx", "install", str(_wheel(dist))], env=env, cwd=tmp_path)
    _check_installed(tmp_path / "bin" / "jcstate", None, tmp_path)
