"""``jcstate verify``: check a host against the desired state, with testinfra.

The path: load the policy files → read the target's hostname and OS (testinfra) → render the
document for that device → each resource's ``verify`` module turns its spec section into
:class:`~jcstate.resource.Check` objects → run them against the target → report PASS/FAIL.

The checks are independent of how the state was reached: they read the target the way an
auditor would (``id``, ``getent``, ``stat``), not through jcstate's own facts, so a bug in the
engine's fact parsing cannot hide itself. The end-to-end tests use the same checks.

Targets (``--hosts``): ``local://``, ``ssh://user@host:port``, ``paramiko://…`` and every other
testinfra URL, plus ``chroot:///path`` for a mounted system image. testinfra's own parser loses
the path of a ``chroot://`` URL (it is the URL's path, not its host), so it is handled here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jcstate.errors import HostError
from jcstate.registry import RESOURCES
from jcstate.resource import Check, Resource

if TYPE_CHECKING:
    from jcstate.document import Device, Document

__all__ = [
    "Outcome",
    "VerifyReport",
    "build_checks",
    "connect",
    "render_json",
    "render_text",
    "run_checks",
    "target_device",
    "verify",
]

Status = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class Outcome:
    """What one check found. ``error`` means the check could not run (not a verdict)."""

    check: Check
    status: Status
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "resource": self.check.resource,
            "name": self.check.name,
            "check": self.check.description,
            "status": self.status,
        }
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class VerifyReport:
    """Every check's outcome for one target."""

    target: str
    device: dict[str, Any] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # spec sections no check covers
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.status == "pass" for o in self.outcomes)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "device": self.device,
            "policies": self.policies,
            "ok": self.ok,
            "passed": self.count("pass"),
            "failed": self.count("fail"),
            "errors": self.count("error"),
            "checks": [o.to_dict() for o in self.outcomes],
            "unchecked": self.unchecked,
            "duration": round(self.duration, 3),
        }


# -- the target ----------------------------------------------------------------------------------
def connect(url: str) -> Any:
    """A testinfra host for ``url`` (see the module docstring for the forms accepted)."""
    import testinfra

    if url in ("local", "local://", "localhost"):
        return testinfra.get_host("local://")
    if url.startswith("chroot://"):
        path = url[len("chroot://") :]
        if not path.startswith("/"):
            raise HostError(f"{url}: a chroot target needs an absolute path: chroot:///path")
        return testinfra.get_host(path, connection="chroot")
    if "://" not in url:
        raise HostError(f"{url}: give a URL such as local://, ssh://user@host or chroot:///path")
    return testinfra.get_host(url)


def target_device(host: Any, url: str) -> Device:
    """The device facts policies are rendered for, read from the target itself."""
    from jcstate.document import Device

    try:
        info = host.system_info
        os_name = {"darwin": "darwin", "windows": "windows"}.get(info.type, info.type)
        if url.startswith("chroot://"):
            # uname in a chroot answers for the machine outside; the image's file is the truth.
            hostname = host.file("/etc/hostname").content_string.strip() or "localhost"
        else:
            hostname = host.check_output("hostname")
        return Device(
            hostname=hostname, os=os_name, osVersion=info.release or "", arch=info.arch or ""
        )
    except Exception as exc:  # testinfra raises plain RuntimeErrors and AssertionErrors
        raise HostError(f"cannot read {url}: {exc}") from exc


# -- checks -----------------------------------------------------------------------------------
def build_checks(document: Document, os_name: str) -> tuple[list[Check], list[str]]:
    """Every resource's checks for the document's spec, in apply order.

    Also returns the spec sections nothing checks, so that a report never passes by silence.
    """
    out: list[Check] = []
    unchecked: list[str] = []
    known = set()
    for res in RESOURCES:
        known.add(res.key)
        section = document.spec.get(res.key)
        if section is None:
            continue
        make = _checks_of(res)
        if make is None:
            unchecked.append(res.key)
            continue
        out += make(section, os_name)
    unchecked += sorted(key for key in document.spec if key not in known)
    return out, unchecked


def _checks_of(res: Resource) -> Any:
    """The resource's check factory, or None when it has none (yet)."""
    if res.checks is None:
        return None
    try:
        return res.verify_checks()
    except ModuleNotFoundError as exc:
        if exc.name and res.checks.startswith(exc.name + ":"):
            return None  # declared but not written: reported as unchecked, not a crash
        raise


def run_checks(checks: Iterable[Check], host: Any) -> list[Outcome]:
    """Run each check; a failure never stops the others."""
    outcomes = []
    for check in checks:
        try:
            check.run(host)
        except AssertionError as exc:
            outcomes.append(Outcome(check, "fail", str(exc) or "assertion failed"))
        except Exception as exc:  # the target did not answer: not a verdict on the state
            outcomes.append(Outcome(check, "error", f"{type(exc).__name__}: {_first_line(exc)}"))
        else:
            outcomes.append(Outcome(check, "pass"))
    return outcomes


def _first_line(exc: BaseException) -> str:
    # testinfra's errors quote the command's whole output; the first line says what failed.
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def verify(
    paths: Sequence[str],
    url: str,
    *,
    hostname: str | None = None,
    labels: dict[str, str] | None = None,
) -> VerifyReport:
    """Load the policies at ``paths``, render them for the target at ``url`` and check it."""
    from jcstate.document import load_repo

    started = time.monotonic()
    repo = load_repo(list(paths))
    host = connect(url)
    device = target_device(host, url)
    if hostname:
        device.hostname = hostname
    device.labels.update(labels or {})
    document = repo.document_for(device)
    report = VerifyReport(target=url, device=device.to_dict(), policies=list(document.policies))
    checks, report.unchecked = build_checks(document, device.os)
    report.outcomes = run_checks(checks, host)
    report.duration = time.monotonic() - started
    return report


# -- output ---------------------------------------------------------------------------------------
def render_text(report: VerifyReport) -> str:
    """pytest-like lines: ``PASS user alice: uid is 1501`` / ``FAIL …: expected X, got Y``."""
    lines = []
    for o in report.outcomes:
        line = f"{o.status.upper()} {o.check.resource} {o.check.name}: {o.check.description}"
        if o.message:
            line += f": {o.message}"
        lines.append(line)
    total = len(report.outcomes)
    summary = f"{total} check(s) on {report.target}: {report.count('pass')} passed"
    if report.count("fail"):
        summary += f", {report.count('fail')} failed"
    if report.count("error"):
        summary += f", {report.count('error')} could not run"
    lines.append(f"{summary} in {report.duration:.2f} s")
    if report.unchecked:
        lines.append(f"not verified (no checks for these yet): {', '.join(report.unchecked)}")
    return "\n".join(lines)


def render_json(report: VerifyReport) -> str:
    import json

    return json.dumps(report.to_dict(), indent=2, default=str)
