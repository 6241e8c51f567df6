"""The document layer's data: devices, selectors, policies and the merged per-device document."""

from __future__ import annotations

import fnmatch
import platform
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jcstate.document.loader import Positions
from jcstate.document.names import OSES

if TYPE_CHECKING:
    from jcstate.host import Host

__all__ = ["Device", "Document", "Policy", "Selector"]

_GLOB_CHARS = frozenset("*?[")


@dataclass
class Device:
    """What a selector and a template can know about a device."""

    hostname: str
    os: str
    id: str = ""
    osVersion: str = ""  # noqa: N815 - the document's own spelling
    arch: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def local(cls, host: Host) -> Device:
        """The device a Host manages: its hostname, OS, OS version and this machine's arch."""
        if host.root == "/":
            hostname = socket.gethostname()
        else:
            hostname = (host.read_text("/etc/hostname") or "").strip() or "localhost"
        release = host.os_release()
        version = release.get("VERSION_ID") or release.get("VERSION", "")
        # Standalone, a device is known by its machine id (the agent uses its enrolled id):
        # this is what `selector.devices` names for `jcstate apply` on the machine itself.
        machine_id = (host.read_text("/etc/machine-id") or "").strip()
        return cls(
            hostname=hostname,
            os=host.os,
            id=machine_id,
            osVersion=version,
            arch=platform.machine(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``device`` object templates see."""
        return {
            "id": self.id,
            "hostname": self.hostname,
            "os": self.os,
            "osVersion": self.osVersion,
            "arch": self.arch,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class Selector:
    """Which devices a policy applies to; an omitted condition admits every device."""

    os: frozenset[str] = frozenset(OSES)
    labels: dict[str, str] = field(default_factory=dict)
    hostnames: tuple[str, ...] = ()  # empty: any hostname
    devices: frozenset[str] = frozenset()  # empty: any device

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> Selector:
        data = data or {}
        return cls(
            os=frozenset(data.get("os") or OSES),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            hostnames=tuple(data.get("hostnames") or ()),
            devices=frozenset(data.get("devices") or ()),
        )

    def matches(self, device: Device) -> bool:
        if device.os not in self.os:
            return False
        if any(device.labels.get(k) != v for k, v in self.labels.items()):
            return False
        if self.devices and device.id not in self.devices:
            return False
        if self.hostnames:
            name = device.hostname.lower()
            if not any(fnmatch.fnmatchcase(name, glob.lower()) for glob in self.hostnames):
                return False
        return True

    def can_overlap(self, other: Selector) -> bool:
        """Whether some device could match both selectors (False only when provably not)."""
        if not self.os & other.os:
            return False
        for key, value in self.labels.items():
            if key in other.labels and other.labels[key] != value:
                return False
        if self.devices and other.devices and not self.devices & other.devices:
            return False
        if self.hostnames and other.hostnames:
            return _globs_can_overlap(self.hostnames, other.hostnames)
        return True


def _globs_can_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Two glob lists are disjoint only when one side is all literal names the other misses."""
    for literals, globs in ((a, b), (b, a)):
        if all(not (_GLOB_CHARS & set(name)) for name in literals):
            return any(
                fnmatch.fnmatchcase(name.lower(), glob.lower())
                for name in literals
                for glob in globs
            )
    return True


@dataclass
class Policy:
    """One policy document as loaded: raw parsed data, positions kept separately."""

    name: str
    file: str
    line: int
    description: str
    selector: dict[str, Any]  # as written; ``matcher`` is the parsed form
    vars: dict[str, Any] = field(repr=False)
    spec: dict[str, Any] = field(repr=False)  # may hold password hashes: never in a repr
    positions: Positions = field(repr=False, compare=False)
    matcher: Selector = field(init=False, repr=False, compare=False)
    on_removal: str | None = None  # lock | delete | keep for users it created; None: default

    def __post_init__(self) -> None:
        self.matcher = Selector.from_data(self.selector)

    @classmethod
    def from_data(cls, data: dict[str, Any], positions: Positions) -> Policy:
        metadata = data.get("metadata") or {}
        return cls(
            name=str(metadata.get("name", "")),
            file=positions.file,
            line=positions.of(())[0],
            description=str(metadata.get("description", "")),
            selector=dict(data.get("selector") or {}),
            vars=dict(data.get("vars") or {}),
            spec=dict(data.get("spec") or {}),
            positions=positions,
            on_removal=data.get("onRemoval"),
        )

    @property
    def where(self) -> str:
        """``file:line`` where the policy document starts."""
        return f"{self.file}:{self.line}"

    def matches(self, device: Device) -> bool:
        return self.matcher.matches(device)


@dataclass
class Document:
    """The state one device must be in: rendered, merged, plain data (never templates)."""

    spec: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "users/alice" → "a.yaml:12"
    policies: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        # spec may hold password hashes; a repr ends up in logs and tracebacks
        return f"Document(policies={self.policies!r}, resources={sorted(self.sources)!r})"

    def to_dict(self) -> dict[str, Any]:
        """What the server sends to the agent: plain data, password hashes included."""
        return {"spec": self.spec, "sources": dict(self.sources), "policies": list(self.policies)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        return cls(
            spec=dict(data.get("spec") or {}),
            sources={str(k): str(v) for k, v in (data.get("sources") or {}).items()},
            policies=[str(p) for p in data.get("policies") or []],
        )
