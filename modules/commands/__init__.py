"""``commands``: one-shot security commands, each run at most once per device.

The model is what a policy (or the server's queue) says::

    commands:
      - id: incident-42-lock        # the device's journal keys on it: never run twice
        action: lock                # lock | restart | shutdown | erase | run
      - id: reboot-after-patch
        action: restart
        delay: 300                  # seconds of warning before acting (default 60)
        message: Security update    # shown to logged-in users with the warning
      - id: rotate-logs-2026-11
        action: run
        run: {command: "logrotate -f /etc/logrotate.conf", shell: /bin/sh, user: root,
              timeout: 300}
        notAfter: 2026-12-01T00:00:00Z

The server's queue has three more actions, which a policy cannot ask for: ``update`` (the
agent installs a release of itself: ``jcstate.agent.update``), ``converge`` (the agent plans
and applies its current document now, ``jcstate device converge``) and ``elevate`` (admin for
one user until an instant, or ``revoke``: ``jcstate elevate``, ``jcstate.agent.expiry``)::

    {"id": "c-1f…", "action": "update",
     "update": {"version": "0.2.0", "sha256": "<64 hex>", "retry": false}}
    {"id": "c-2a…", "action": "converge"}
    {"id": "c-3b…", "action": "elevate",
     "elevate": {"user": "alice", "until": "2027-01-31T18:00:00Z", "seconds": 7200,
                 "reason": "INC-4711"}}
    {"id": "c-3c…", "action": "elevate", "elevate": {"user": "alice", "revoke": true}}

How a command is carried out is each OS's business (``linux.py``, ``windows.py``,
``darwin.py``); that it happens at most once is the journal's (``journal.py``) and the
runner's (``execution.py``). Planning (``backend.py``) compares the policy's ids with the
journal: an id the journal holds is never planned again.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

from jcstate.errors import PlanError
from jcstate.resource import Resource

__all__ = [
    "ACTIONS",
    "Command",
    "DEFAULT_DELAY",
    "DEFAULT_TIMEOUT",
    "ElevateSpec",
    "ID_PATTERN",
    "RESOURCE",
    "RELEASE_VERSION",
    "RunSpec",
    "UpdateSpec",
    "parse",
    "parse_command",
]

Action = Literal["lock", "restart", "shutdown", "erase", "run", "update", "converge", "elevate"]
ACTIONS: tuple[str, ...] = (
    "lock",
    "restart",
    "shutdown",
    "erase",
    "run",
    "update",
    "converge",
    "elevate",
)
# queued by the server only, never written in a policy
SERVER_ONLY = ("update", "converge", "elevate")
MAX_ELEVATION = 30 * 86400  # seconds: an elevation longer than this belongs in a policy
# The id names a journal file: no '/', never '.' or '..' (it starts with a letter or digit).
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_DELAY = 60  # seconds users get to save their work before restart/shutdown
DEFAULT_TIMEOUT = 300  # seconds before a `run` command's process group is killed
MAX_DELAY = 86400
# A release's version names a directory on the device (INSTALL_DIR/releases/VERSION): it starts
# with a digit (never '.' or '..') and has no '/'. Wide enough for PEP 440 (0.2.0rc1, 1.0+local).
RELEASE_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"id", "action", "run", "confirm", "notAfter", "delay", "message", "update", "elevate"}
_ELEVATE_FIELDS = {"user", "until", "seconds", "revoke", "reason"}
_RUN_FIELDS = {"command", "argv", "shell", "user", "timeout"}
_UPDATE_FIELDS = {"version", "sha256", "retry", "signature"}


@dataclass(frozen=True)
class RunSpec:
    """What action ``run`` executes: an argument vector, or a command line for a shell."""

    argv: tuple[str, ...] | None = None
    command: str | None = None
    shell: str | None = None  # None: the OS's default shell (/bin/sh, powershell)
    user: str | None = None  # None: the agent's own account (root / SYSTEM)
    timeout: int = DEFAULT_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timeout": self.timeout}
        if self.argv is not None:
            out["argv"] = list(self.argv)
        if self.command is not None:
            out["command"] = self.command
        if self.shell is not None:
            out["shell"] = self.shell
        if self.user is not None:
            out["user"] = self.user
        return out


@dataclass(frozen=True)
class UpdateSpec:
    """What action ``update`` installs: a release of the agent, by version and wheel digest.

    ``retry``: the admin asks again for a version the device holds after three failures.
    ``signature``: the release key's signature of version and digest (jcstate.agent.release_key),
    as uploaded with the release; the device checks it with the key it pinned.
    """

    version: str
    sha256: str
    retry: bool = False
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "sha256": self.sha256}
        if self.retry:
            out["retry"] = True
        if self.signature is not None:
            out["signature"] = self.signature
        return out


@dataclass(frozen=True)
class ElevateSpec:
    """What action ``elevate`` does: ``user`` is admin until ``until`` (at most ``seconds``
    after the device receives it, so a device clock that is behind does not lengthen it), or,
    with ``revoke``, an elevation given earlier ends now."""

    user: str
    until: dt.datetime | None = None
    seconds: int | None = None
    revoke: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user}
        if self.revoke:
            out["revoke"] = True
        if self.until is not None:
            out["until"] = self.until.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Command:
    """One security command, as a policy or the server's queue gives it."""

    id: str
    action: Action
    run: RunSpec | None = None
    confirm: str | None = None
    not_after: dt.datetime | None = None
    delay: int = DEFAULT_DELAY
    message: str | None = None
    update: UpdateSpec | None = None
    elevate: ElevateSpec | None = None

    def expired(self, now: dt.datetime | None = None) -> bool:
        """True when ``notAfter`` has passed: a device that has not run it skips it."""
        if self.not_after is None:
            return False
        return (now or dt.datetime.now(dt.UTC)) > self.not_after

    def to_dict(self) -> dict[str, Any]:
        """The plain form, as accepted by :func:`parse_command` (journal, server, agent)."""
        out: dict[str, Any] = {"id": self.id, "action": self.action}
        if self.run is not None:
            out["run"] = self.run.to_dict()
        if self.confirm is not None:
            out["confirm"] = self.confirm
        if self.not_after is not None:
            out["notAfter"] = self.not_after.isoformat().replace("+00:00", "Z")
        if self.action in ("restart", "shutdown"):
            out["delay"] = self.delay
        if self.message is not None:
            out["message"] = self.message
        if self.update is not None:
            out["update"] = self.update.to_dict()
        if self.elevate is not None:
            out["elevate"] = self.elevate.to_dict()
        return out


def parse(section: Any) -> tuple[Command, ...]:
    """Turn the plain ``spec.commands`` list into commands (raises PlanError).

    Policy commands are checked more strictly than queued ones: an erase needs
    ``confirm: erase`` (the server's queue checks the device id typed back instead).
    """
    if not isinstance(section, list):
        raise PlanError("commands: expected a list of commands")
    commands = [parse_command(item, where=f"commands[{i}]") for i, item in enumerate(section)]
    seen: set[str] = set()
    for cmd in commands:
        if cmd.id in seen:
            raise PlanError(f"commands: id {cmd.id} is used twice")
        seen.add(cmd.id)
        if cmd.action == "erase" and cmd.confirm != "erase":
            raise PlanError(f"commands: {cmd.id}: an erase command needs 'confirm: erase'")
        if cmd.action == "update":
            raise PlanError(
                f"commands: {cmd.id}: action update is queued by the server "
                "(jcstate command update), not written in a policy"
            )
        if cmd.action == "converge":
            raise PlanError(
                f"commands: {cmd.id}: action converge is queued by the server "
                "(jcstate device converge), not written in a policy"
            )
        if cmd.action == "elevate":
            raise PlanError(
                f"commands: {cmd.id}: action elevate is queued by the server "
                "(jcstate elevate); in a policy, give the user admin: {until: …}"
            )
    return tuple(commands)


def parse_command(item: Any, *, where: str = "command") -> Command:
    """One command from its plain form (a policy entry, a queued command, a journal record)."""
    if not isinstance(item, dict):
        raise PlanError(f"{where}: expected a mapping with 'id' and 'action'")
    unknown = set(item) - _FIELDS
    if unknown:
        raise PlanError(f"{where}: unknown field(s): {', '.join(sorted(unknown))}")
    cid = item.get("id")
    if not isinstance(cid, str) or not ID_PATTERN.fullmatch(cid):
        raise PlanError(
            f"{where}: id must be letters, digits, '.', '_' or '-' (at most 128, "
            "starting with a letter or digit)"
        )
    where = f"command {cid}"
    action = item.get("action")
    if action not in ACTIONS:
        raise PlanError(f"{where}: action must be one of {', '.join(ACTIONS)}")
    run = _parse_run(item.get("run"), where) if "run" in item else None
    if action == "run" and run is None:
        raise PlanError(f"{where}: action run needs a 'run' mapping (command or argv)")
    if action != "run" and run is not None:
        raise PlanError(f"{where}: 'run' is only for action run")
    update = _parse_update(item.get("update"), where) if "update" in item else None
    if action == "update" and update is None:
        raise PlanError(f"{where}: action update needs an 'update' mapping (version, sha256)")
    if action != "update" and update is not None:
        raise PlanError(f"{where}: 'update' is only for action update")
    elevate = _parse_elevate(item.get("elevate"), where) if "elevate" in item else None
    if action == "elevate" and elevate is None:
        raise PlanError(f"{where}: action elevate needs an 'elevate' mapping (user, until)")
    if action != "elevate" and elevate is not None:
        raise PlanError(f"{where}: 'elevate' is only for action elevate")
    delay = item.get("delay", DEFAULT_DELAY)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY:
        raise PlanError(f"{where}: delay must be whole seconds between 0 and {MAX_DELAY}")
    message = item.get("message")
    if message is not None and (not isinstance(message, str) or "\0" in message):
        raise PlanError(f"{where}: message must be text")
    confirm = item.get("confirm")
    if confirm is not None and not isinstance(confirm, str):
        raise PlanError(f"{where}: confirm must be text")
    return Command(
        id=cid,
        action=action,
        run=run,
        confirm=confirm,
        not_after=_parse_time(item.get("notAfter"), where),
        delay=delay,
        message=message,
        update=update,
        elevate=elevate,
    )


def _check_mapping(value: Any, fields: Any, what: str, needs: str) -> None:
    """``value`` is a mapping with only ``fields``, else a PlanError naming ``what``."""
    if not isinstance(value, dict):
        raise PlanError(f"{what} must be a mapping {needs}")
    unknown = set(value) - set(fields)
    if unknown:
        raise PlanError(f"{what}: unknown field(s): {', '.join(sorted(unknown))}")


def _parse_update(update: Any, where: str) -> UpdateSpec:
    _check_mapping(update, _UPDATE_FIELDS, f"{where}: update", "with version and sha256")
    version, sha256 = update.get("version"), update.get("sha256")
    if not isinstance(version, str) or not RELEASE_VERSION.fullmatch(version):
        raise PlanError(
            f"{where}: update.version must be a release version (a digit first; letters, "
            "digits, '.', '+', '!', '_', '-'; at most 64)"
        )
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise PlanError(f"{where}: update.sha256 must be 64 lowercase hex digits")
    retry = update.get("retry", False)
    if not isinstance(retry, bool):
        raise PlanError(f"{where}: update.retry must be true or false")
    signature = update.get("signature")
    if signature is not None and (not isinstance(signature, str) or len(signature) > 200):
        raise PlanError(f"{where}: update.signature must be a base64 signature")
    return UpdateSpec(version=version, sha256=sha256, retry=retry, signature=signature)


def _parse_elevate(value: Any, where: str) -> ElevateSpec:
    _check_mapping(value, _ELEVATE_FIELDS, f"{where}: elevate", "with user and until")
    user = value.get("user")
    if not isinstance(user, str) or not user or len(user) > 256 or any(c in user for c in "/:\0\n"):
        raise PlanError(f"{where}: elevate.user must be an account name")
    reason = value.get("reason")
    if reason is not None and (not isinstance(reason, str) or "\0" in reason):
        raise PlanError(f"{where}: elevate.reason must be text")
    revoke = value.get("revoke", False)
    if not isinstance(revoke, bool):
        raise PlanError(f"{where}: elevate.revoke must be true or false")
    if revoke:
        if "until" in value or "seconds" in value:
            raise PlanError(f"{where}: elevate.revoke takes no until or seconds")
        return ElevateSpec(user=user, revoke=True, reason=reason)
    seconds = value.get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not 1 <= seconds <= MAX_ELEVATION
    ):
        raise PlanError(
            f"{where}: elevate.seconds must be whole seconds between 1 and {MAX_ELEVATION} "
            "(30 days; a longer right belongs in a policy)"
        )
    until = _parse_time(value.get("until"), where, "elevate.until")
    if until is None:
        raise PlanError(f"{where}: elevate needs until (RFC 3339) or revoke: true")
    return ElevateSpec(user=user, until=until, seconds=seconds, reason=reason)


def _parse_run(run: Any, where: str) -> RunSpec:
    _check_mapping(run, _RUN_FIELDS, f"{where}: run", "with command or argv")
    command, argv = run.get("command"), run.get("argv")
    if (command is None) == (argv is None):
        raise PlanError(f"{where}: run needs exactly one of command or argv")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise PlanError(f"{where}: run.command must be a non-empty command line")
    if argv is not None and (
        not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)
    ):
        raise PlanError(f"{where}: run.argv must be a non-empty list of strings")
    if argv is not None and "shell" in run:
        raise PlanError(f"{where}: run.shell goes with run.command, not run.argv")
    for key in ("shell", "user"):
        value = run.get(key)
        if value is not None and (not isinstance(value, str) or not value or "\0" in value):
            raise PlanError(f"{where}: run.{key} must be a non-empty string")
    timeout = run.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise PlanError(f"{where}: run.timeout must be whole seconds between 1 and 86400")
    return RunSpec(
        argv=tuple(argv) if argv is not None else None,
        command=command,
        shell=run.get("shell"),
        user=run.get("user"),
        timeout=timeout,
    )


def _parse_time(value: Any, where: str, field: str = "notAfter") -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):  # YAML may already have made it a datetime
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PlanError(f"{where}: {field} is not an RFC 3339 date-time: {value}") from exc
    else:
        raise PlanError(f"{where}: {field} must be a date-time like 2026-12-01T00:00:00Z")
    if moment.tzinfo is None:
        raise PlanError(f"{where}: {field} needs a time zone (for example a trailing Z)")
    return moment


RESOURCE = Resource(
    key="commands",
    parse=parse,
    backends={
        "linux": "jcstate.modules.commands.linux:BACKEND",
        "darwin": "jcstate.modules.commands.darwin:BACKEND",
        "windows": "jcstate.modules.commands.windows:BACKEND",
    },
)
