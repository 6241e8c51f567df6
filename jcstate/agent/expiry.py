"""Time-bound admin on the device: a clock that does not go back, elevations, and expiries.

A policy's ``admin: {until: T}`` and an elevation (``jcstate elevate``) both end at an instant,
and the device itself must take the right away then, even when the server is out of reach. The
agent therefore keeps, in its state directory:

* ``timebound.json``: the last document it received, without password fields (so that a
  restart while offline still knows what ends when; the document's other secrets never come
  with it), the active elevations, and ``enforced``: the instant up to which expiries were
  applied. Any ``until`` in ``(enforced, now]`` is due: at start, at every round and when the
  agent's timer wakes at the next instant (its long poll and its back-off sleep never last
  beyond it), the agent converges (or, with no document in memory after an offline restart,
  applies only the removals of admin rights, see :mod:`jcstate.agent.worker`).
* ``clock.json``: what :class:`Clock` needs to refuse a step backwards.

**The clock.** Expiries are judged by :meth:`Clock.now`, never by the wall clock alone: it is
``max(wall clock, floor)``, where the floor is the last instant the agent vouched for plus the
time elapsed since, read from the boot-time clock (Linux ``CLOCK_BOOTTIME``: counts suspend,
cannot be set; elsewhere the monotonic clock). In the same boot (same Linux ``boot_id``, or a
boot clock that has not gone back), the elapsed time is the difference of the boot clock; after
a reboot it is the time since boot (the saved instant was before the boot, so that is a lower
bound too). A clock stepped backwards therefore does not move ``now`` back, within a boot or
across reboots; the right ends on time as long as the device runs. What it cannot know is the
time a device spent powered off, if the clock is then also set back: the right then ends later
by at most that time off (never before the device has run as long as it had left). A clock set
forward (or a wrong NTP answer) makes rights end early: the safe side, and the floor keeps that
instant until the real time passes it. Removing ``clock.json`` (root only) forgets the floor.

Tests make the wall clock step with ``JCSTATE_TEST_CLOCK_FILE`` (a file holding seconds added
to the wall clock, read at every reading): a test only, never in production.

**Elevations.** An elevation for user U until T (at most ``seconds`` after it arrives, measured
by this clock, so a device clock that is behind does not lengthen it) is merged into the
document the worker converges as ``admin: {until: T}`` for U (the later of the two when the
policy gives U a time-bound right too; a standing ``admin: true`` is left as it is). It is kept
while it runs and dropped once ended and enforced. Only users a policy lists present on this
device can be elevated (an unmanaged account has no ledger entry and no policy to return to).

This module is imported by the resident agent: it uses only the standard library's json, os,
time and datetime.
"""

from __future__ import annotations

import datetime
import json
import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CLOCK_FILE",
    "STATE_FILE",
    "TEST_CLOCK_ENV",
    "Clock",
    "Expiries",
    "instant",
    "managed_user",
    "text",
]

CLOCK_FILE = "clock.json"
STATE_FILE = "timebound.json"
TEST_CLOCK_ENV = "JCSTATE_TEST_CLOCK_FILE"  # tests only: seconds added to the wall clock
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def instant(value: Any) -> float | None:
    """An RFC 3339 text with an offset → epoch seconds; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def text(epoch: float) -> str:
    """Epoch seconds → ``2027-01-31T18:00:00Z`` (whole seconds, rounded up: never earlier)."""
    whole = int(epoch) + (1 if epoch > int(epoch) else 0)
    moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _wall() -> float:
    now = time.time()
    path = os.environ.get(TEST_CLOCK_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                now += float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
    return now


def _since_boot() -> float:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def _boot_id() -> str | None:
    try:
        with open(_BOOT_ID, encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _write(path: str, data: dict[str, Any]) -> None:
    """Atomically: a temporary file, fsync, rename (0600: the document's names)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # damaged: the wall clock alone, no remembered document (logged by caller)
    return data if isinstance(data, dict) else {}


class Clock:
    """The agent's clock for time-bound rights: a step backwards never moves it back.

    ``wall``, ``since_boot`` and ``boot_id`` are injectable for tests.
    """

    def __init__(
        self,
        state_dir: str,
        *,
        wall: Any = _wall,
        since_boot: Any = _since_boot,
        boot_id: Any = _boot_id,
    ):
        self.path = os.path.join(state_dir, CLOCK_FILE)
        self._wall, self._since_boot = wall, since_boot
        self._boot = boot_id()
        saved = _read(self.path)
        self._floor: tuple[float, float, str | None] | None = None
        try:
            floor = (float(saved["instant"]), float(saved["sinceBoot"]), saved.get("bootId"))
        except (KeyError, TypeError, ValueError):
            floor = None
        if floor is not None:
            self._floor = floor

    def now(self) -> float:
        """Epoch seconds: the wall clock, but never before the last instant vouched for plus
        the time elapsed since."""
        wall, boot = self._wall(), self._since_boot()
        now = wall
        if self._floor is not None:
            at, since, boot_id = self._floor
            if boot_id is not None and self._boot is not None:
                same_boot = boot_id == self._boot
            else:
                same_boot = boot >= since
            elapsed = boot - since if same_boot else boot
            now = max(wall, at + max(elapsed, 0.0))
        self._floor = (now, boot, self._boot)
        return now

    def save(self) -> None:
        """Persist the floor (at every round and whenever a right is granted or enforced)."""
        self.now()
        assert self._floor is not None
        at, since, boot_id = self._floor
        try:
            _write(self.path, {"instant": at, "sinceBoot": since, "bootId": boot_id})
        except OSError:
            pass  # the floor stays in memory; after a restart the wall clock starts it again


class Expiries:
    """What ends when on this device: the last document's ``admin.until``s and elevations."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, STATE_FILE)
        data = _read(self.path)
        document = data.get("document")
        self.document: dict[str, Any] | None = document if isinstance(document, dict) else None
        self.etag = str(data.get("etag") or "")
        elevations = data.get("elevations")
        self.elevations: dict[str, dict[str, Any]] = {
            str(k): v
            for k, v in (elevations or {}).items()
            if isinstance(v, dict) and instant(v.get("until")) is not None
        }
        enforced = data.get("enforced")
        self.enforced: float = float(enforced) if isinstance(enforced, (int, float)) else 0.0
        self.unsaved = False  # True: the last save() was refused by the disk

    def save(self) -> None:
        """Write the state file; a disk that refuses it (full) leaves the state in memory,
        written again at the next round: expiry goes on, the agent too (docs/agent.md, "Full
        disk")."""
        try:
            _write(
                self.path,
                {
                    "version": 1,
                    "document": self.document,
                    "etag": self.etag,
                    "elevations": self.elevations,
                    "enforced": self.enforced,
                },
            )
        except OSError:
            self.unsaved = True
        else:
            self.unsaved = False

    # -- the document ----------------------------------------------------------------------
    def remember(self, document: dict[str, Any] | None, etag: str) -> None:
        """Keep the last document received (without password fields) for offline expiry."""
        kept = None if document is None else _without_passwords(document)
        if kept != self.document or etag != self.etag or self.unsaved:
            self.document, self.etag = kept, etag
            self.save()

    def instants(self) -> list[float]:
        """Every instant a right ends: the document's and the elevations'."""
        out = [
            t
            for user in _users(self.document)
            if isinstance(user.get("admin"), dict)
            and (t := instant(user["admin"].get("until"))) is not None
        ]
        out += [t for e in self.elevations.values() if (t := instant(e.get("until"))) is not None]
        return out

    def next(self, now: float) -> float | None:
        """The next instant a right ends after ``now`` (None: nothing ends)."""
        later = [t for t in self.instants() if t > now]
        return min(later) if later else None

    def due(self, now: float) -> list[float]:
        """Instants in ``(enforced, now]``: rights ended that no converge has enforced yet."""
        return sorted(t for t in self.instants() if self.enforced < t <= now)

    def seconds_to_next(self, now: float) -> float | None:
        """Seconds until the next instant after ``now`` (what is due already is the round's
        business: a converge that failed is retried each round, never in a tight loop)."""
        upcoming = self.next(now)
        return None if upcoming is None else upcoming - now

    def enforced_at(self, now: float) -> None:
        """A converge judged rights at ``now``: everything ended by then is enforced, and the
        ended elevations go."""
        ended = [u for u, e in self.elevations.items() if (instant(e.get("until")) or 0) <= now]
        for user in ended:
            del self.elevations[user]
        if now > self.enforced or ended:
            self.enforced = max(self.enforced, now)
            self.save()

    # -- elevations ------------------------------------------------------------------------
    def grant(self, user: str, until: float, reason: str | None) -> None:
        self.elevations[user] = {"until": text(until)}
        if reason:
            self.elevations[user]["reason"] = reason
        self.save()

    def revoke(self, user: str) -> bool:
        """End ``user``'s elevation now; False when there was none."""
        if self.elevations.pop(user, None) is None:
            return False
        self.save()
        return True

    def merged(self, document: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        """``document`` with each running elevation as ``admin: {until: T}`` for its user."""
        running = {u: e for u, e in self.elevations.items() if (instant(e.get("until")) or 0) > now}
        if document is None or not running:
            return document
        out = json.loads(json.dumps(document))  # a copy: the agent's document stays as sent
        for user in _users(out):
            elevation = running.get(str(user.get("name")))
            if elevation is None or user.get("state", "present") != "present":
                continue
            admin = user.get("admin")
            if admin is True:
                continue  # a standing right: nothing to add
            until = str(elevation["until"])
            if isinstance(admin, dict) and (instant(admin.get("until")) or 0) > (
                instant(until) or 0
            ):
                continue  # the policy's own time-bound right runs longer
            user["admin"] = {"until": until}
        return out


def managed_user(document: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The document's entry for ``name`` when a policy lists it present, else None."""
    for user in _users(document):
        if user.get("name") == name and user.get("state", "present") == "present":
            return user
    return None


def _users(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    spec = (document or {}).get("spec") or {}
    users = spec.get("users") if isinstance(spec, dict) else None
    return [u for u in users or [] if isinstance(u, dict)]


def _without_passwords(document: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(document))
    for user in _users(out):
        user.pop("password", None)
    return out
