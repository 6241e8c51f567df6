"""What a release of the agent is: a pure-Python wheel of jcstate, checked from its own contents.

The server checks an upload with :func:`inspect_wheel` before storing it, and the agent checks
the bytes it downloaded again before installing them (it trusts the digest it was sent, not
the server's storage). Nothing is taken from a file name: the wheel's name on the device is
rebuilt from its ``*.dist-info`` (pip needs a well-formed one), so a name can smuggle no path.
"""

from __future__ import annotations

import email.parser
import io
import re
import zipfile
from dataclasses import dataclass

from jcstate.errors import JcstateError
from jcstate.modules.commands import RELEASE_VERSION

__all__ = ["MAX_WHEEL_BYTES", "BadWheel", "WheelInfo", "inspect_wheel"]

MAX_WHEEL_BYTES = 64 * 1024 * 1024  # a jcstate wheel is well under 1 MB
PROJECT = "jcstate"
# files every agent release must have: the package and the agent's entry point
_REQUIRED = ("jcstate/__init__.py", "jcstate/agent/__main__.py")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


class BadWheel(JcstateError):
    """The bytes are not a wheel of jcstate that every device could install."""


@dataclass(frozen=True)
class WheelInfo:
    """A checked release: its version and the file name pip expects for it."""

    version: str
    filename: str
    size: int


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def inspect_wheel(data: bytes) -> WheelInfo:
    """Check that ``data`` is a pure-Python wheel of jcstate with a usable version.

    Raises :class:`BadWheel` saying what is wrong.
    """
    if len(data) > MAX_WHEEL_BYTES:
        raise BadWheel(f"the wheel is {len(data)} bytes; at most {MAX_WHEEL_BYTES}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise BadWheel(f"not a wheel (a zip archive): {exc}") from None
    with archive:
        names = archive.namelist()
        for name in names:
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                raise BadWheel(f"unsafe path in the wheel: {name!r}")
        infos = sorted({n.split("/")[0] for n in names if n.count("/") == 1})
        dist_info = [d for d in infos if d.endswith(".dist-info")]
        if len(dist_info) != 1:
            raise BadWheel(f"expected one *.dist-info directory, found {len(dist_info)}")
        dist = dist_info[0]
        try:
            metadata = archive.read(f"{dist}/METADATA").decode("utf-8")
            wheel = archive.read(f"{dist}/WHEEL").decode("utf-8")
        except KeyError as exc:
            raise BadWheel(f"{dist} has no {exc.args[0].rsplit('/', 1)[-1]}") from None
        except UnicodeDecodeError:
            raise BadWheel(f"{dist}: METADATA or WHEEL is not UTF-8 text") from None
        meta = email.parser.Parser().parsestr(metadata, headersonly=True)
        name, version = meta.get("Name") or "", meta.get("Version") or ""
        if _normalize(name) != PROJECT:
            raise BadWheel(f"this is a wheel of {name or '(no name)'!r}, not of {PROJECT}")
        if not RELEASE_VERSION.fullmatch(version):
            raise BadWheel(
                f"version {version!r} cannot name a release (it must start with a digit)"
            )
        fields = email.parser.Parser().parsestr(wheel, headersonly=True)
        if (fields.get("Root-Is-Purelib") or "").strip().lower() != "true":
            raise BadWheel("not a pure-Python wheel (Root-Is-Purelib is not true)")
        tags = [t.strip() for t in fields.get_all("Tag") or [] if t.strip()]
        parts = [t.split("-") for t in tags]
        if not parts or any(len(p) != 3 or p[2] != "any" for p in parts):
            raise BadWheel(f"every device must be able to install it: tags {tags} are not *-any")
        missing = [f for f in _REQUIRED if f not in names]
        if missing:
            raise BadWheel(f"not an agent release: it has no {', '.join(missing)}")
        declared = _VERSION_LINE.search(
            archive.read("jcstate/__init__.py").decode("utf-8", "replace")
        )
        if declared and declared.group(1) != version:
            raise BadWheel(
                f"METADATA says version {version} but jcstate/__init__.py says "
                f"{declared.group(1)}: the agent would report the wrong version"
            )
    tag = "-".join(".".join(sorted({p[i] for p in parts})) for i in range(3))
    # a wheel name's fields are '-'-separated: a '-' inside the version is written '_'
    filename = f"{PROJECT}-{version.replace('-', '_')}-{tag}.whl"
    return WheelInfo(version=version, filename=filename, size=len(data))
