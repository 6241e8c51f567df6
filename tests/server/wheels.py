"""Wheels of jcstate for the self-update tests, written directly as zip files.

``pip wheel --no-build-isolation`` needs setuptools >= 77 (pyproject.toml's SPDX licence), which
a venv made by ``python3 -m venv`` on Debian 12 does not have, and the tests download nothing.
A wheel is a zip with a ``*.dist-info`` (METADATA, WHEEL, RECORD), laid out exactly as
setup.py ships the package (``modules/`` → ``jcstate/modules``, ``schemas/`` →
``jcstate/schemas``), so pip installs these like any other.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MAIN = """\
import sys

print("this release cannot start", file=sys.stderr)
sys.exit(3)
"""


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_wheel(
    out_dir: Path,
    version: str,
    files: dict[str, bytes],
    *,
    name: str = "jcstate",
    purelib: bool = True,
    tag: str = "py3-none-any",
) -> Path:
    """Write ``files`` (path in the wheel → bytes) as a wheel of ``name`` ``version``."""
    dist = f"{name}-{version}.dist-info"
    everything = dict(files)
    everything[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test release\n"
    ).encode()
    everything[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: jcstate-tests\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: {tag}\n"
    ).encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in everything.items()]
    record.append(f"{dist}/RECORD,,")
    everything[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in everything.items():
            archive.writestr(member, data)
    return path


def minimal_files(version: str) -> dict[str, bytes]:
    """Enough to pass the server's checks (not to run)."""
    return {
        "jcstate/__init__.py": f'__version__ = "{version}"\n'.encode(),
        "jcstate/agent/__init__.py": b"",
        "jcstate/agent/__main__.py": MAIN.encode(),
    }


def source_files(version: str) -> dict[str, bytes]:
    """This repository's package, as a release of ``version`` (``__version__`` rewritten)."""
    files: dict[str, bytes] = {}
    for top, prefix in (("jcstate", "jcstate"), ("modules", "jcstate/modules")):
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix == ".py":
                files[f"{prefix}/{path.relative_to(REPO / top).as_posix()}"] = path.read_bytes()
    for path in sorted((REPO / "schemas").iterdir()):
        if path.suffix in (".py", ".json"):
            files[f"jcstate/schemas/{path.name}"] = path.read_bytes()
    init = files["jcstate/__init__.py"].decode()
    files["jcstate/__init__.py"] = re.sub(
        r'^__version__ = ".*"$', f'__version__ = "{version}"', init, flags=re.MULTILINE
    ).encode()
    return files


def minimal_wheel(out_dir: Path, version: str) -> bytes:
    return build_wheel(out_dir, version, minimal_files(version)).read_bytes()
