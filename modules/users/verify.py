"""Verify checks for ``spec.users``: what a present, locked or absent account must look like.

Each check reads the target through testinfra's vocabulary (``host.user(name).uid``,
``host.file(path).mode``) and raises :class:`AssertionError` with ``expected X, got Y``.
Only fields the policy sets are checked (``None`` = not managed). The password hash is
compared without ever being shown: its check's description and failure message say
``(secret)`` and nothing else.

Linux gets every check. testinfra reads macOS and Windows accounts only partly (its ``user``
module needs ``getent``, which macOS lacks), so there only existence, uid and group
membership are checked; the other fields are left to the OS-specific backends' own
re-read after apply.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from jcstate.modules.users.model import UserSpec, admin_at, expiry_text, parse
from jcstate.resource import Check
from jcstate.secret import REDACTED, Secret

__all__ = ["checks"]

_KIND = "user"
_ADMIN_GROUPS = {"linux": ("sudo", "wheel"), "darwin": ("admin",), "windows": ("Administrators",)}


def checks(section: list[Mapping[str, Any]] | None, os_name: str) -> list[Check]:
    """The checks for a rendered document's ``spec.users`` on a target running ``os_name``."""
    out: list[Check] = []
    for user in parse(section):
        if user.state == "absent":
            out += _absent(user, os_name)
        else:
            out += _present(user, os_name)
    return out


def _check(user: UserSpec, description: str, run: Callable[[Any], None]) -> Check:
    return Check(resource=_KIND, name=user.name, description=description, run=run)


def _expect(what: str, expected: Any, actual: Any) -> None:
    if expected != actual:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def _account(host: Any, name: str) -> Any:
    """testinfra's user, or a clear failure when it does not exist (instead of a stack trace)."""
    user = host.user(name)
    if not user.exists:
        raise AssertionError(f"user {name} does not exist")
    return user


# -- absent ------------------------------------------------------------------------------------
def _absent(user: UserSpec, os_name: str) -> list[Check]:
    name = user.name

    def gone(host: Any) -> None:
        if host.user(name).exists:
            raise AssertionError(f"user {name} exists")

    out = [_check(user, "does not exist", gone)]
    if user.remove_home and os_name == "linux":
        home = user.home or f"/home/{name}"

        def home_gone(host: Any) -> None:
            if host.file(home).exists:
                raise AssertionError(f"{home} still exists")

        out.append(_check(user, f"home {home} was removed", home_gone))
    return out


# -- present / locked ---------------------------------------------------------------------------
def _present(user: UserSpec, os_name: str) -> list[Check]:
    name = user.name

    def exists(host: Any) -> None:
        _account(host, name)

    out = [_check(user, "exists", exists)]
    if user.uid is not None:
        uid = user.uid
        out.append(
            _check(
                user, f"uid is {uid}", lambda host: _expect("uid", uid, _account(host, name).uid)
            )
        )
    if user.groups:
        wanted = tuple(user.groups)

        def member_of(host: Any) -> None:
            have = set(_account(host, name).groups)
            missing = [g for g in wanted if g not in have]
            if missing:
                raise AssertionError(
                    f"groups: expected to include {', '.join(wanted)}, "
                    f"missing {', '.join(missing)} (has {', '.join(sorted(have))})"
                )

        out.append(_check(user, f"is in groups {', '.join(wanted)}", member_of))
    # a time-bound right is checked while it runs; once ended, whether it went depends on who
    # granted it (the device's ledger), which a check from outside cannot know
    user = admin_at(user, datetime.datetime.now(datetime.UTC))
    if user.admin is not None:
        out.append(_admin_check(user, os_name))
    if os_name != "linux":
        return out

    if user.home is not None:
        home = user.home
        out.append(
            _check(
                user,
                f"home is {home}",
                lambda host: _expect("home", home, _account(host, name).home),
            )
        )
    if user.shell is not None:
        shell = user.shell
        out.append(
            _check(
                user,
                f"shell is {shell}",
                lambda host: _expect("shell", shell, _account(host, name).shell),
            )
        )
    if user.full_name is not None:
        full = user.full_name

        def gecos(host: Any) -> None:
            # The full name is the GECOS field's first comma-separated part.
            _expect("full name", full, _account(host, name).gecos.split(",")[0])

        out.append(_check(user, f"full name is {full!r}", gecos))
    if user.primary_group is not None:
        primary = user.primary_group
        out.append(
            _check(
                user,
                f"primary group is {primary}",
                lambda host: _expect("primary group", primary, _account(host, name).group),
            )
        )
    if user.expires is not None and user.state != "locked":  # locking sets its own expiry
        out.append(_expiry_check(user))
    if user.state == "locked":  # both facts of a lock, each on its own
        out.append(_locked_check(user))
        out.append(_lock_expiry_check(user))
    if user.password_hash is not None:
        out.append(_password_check(user, user.password_hash))
    if user.ssh_authorized_keys is not None:
        out += _authorized_keys_checks(user, tuple(user.ssh_authorized_keys))
    return out


def _admin_check(user: UserSpec, os_name: str) -> Check:
    name, admin = user.name, bool(user.admin)
    candidates = _ADMIN_GROUPS.get(os_name, ("sudo", "wheel"))

    def run(host: Any) -> None:
        # Debian names it sudo, Red Hat wheel: the admin group is the first that exists.
        group = next((g for g in candidates if host.group(g).exists), candidates[0])
        inside = group in _account(host, name).groups
        if inside != admin:
            raise AssertionError(
                f"admin: expected {'in' if admin else 'not in'} group "
                f"{group}, but is {'in' if inside else 'not in'} it"
            )

    return _check(user, "is an administrator" if admin else "is not an administrator", run)


def _expiry_check(user: UserSpec) -> Check:
    """A date is that day; ``never`` is no expiry at all (testinfra's expiration_date None)."""
    name = user.name
    shown = expiry_text(user.expires)
    wanted = None if shown == "never" else shown  # never: no expiration date at all

    def run(host: Any) -> None:
        stamp = _account(host, name).expiration_date
        actual = stamp.date() if isinstance(stamp, datetime.datetime) else stamp
        _expect("expires", wanted, None if actual is None else actual.isoformat())

    what = "never expires" if wanted is None else f"expires on {wanted}"
    return _check(user, f"account {what}", run)


def _shadow_password(host: Any, name: str) -> str:
    """The shadow password field. Errors are re-raised without the command's output."""
    user = _account(host, name)
    try:
        return str(user.password)
    except Exception:
        raise AssertionError(f"cannot read the shadow entry of {name}") from None


def _locked_check(user: UserSpec) -> Check:
    name = user.name

    def run(host: Any) -> None:
        if not _shadow_password(host, name).startswith("!"):
            raise AssertionError("password is not locked (no '!' in front of the hash)")

    return _check(user, "password is locked", run)


def _lock_expiry_check(user: UserSpec) -> Check:
    """sshd accepts keys for a '!' password: a lock also expires the account (usermod -e 1)."""
    name = user.name

    def run(host: Any) -> None:
        stamp = _account(host, name).expiration_date
        actual = stamp.date() if isinstance(stamp, datetime.datetime) else stamp
        _expect("expires", "1970-01-02", None if actual is None else actual.isoformat())

    return _check(user, "account is expired by the lock (1970-01-02)", run)


def _password_check(user: UserSpec, wanted: Secret) -> Check:
    name = user.name
    locked = user.state == "locked"

    def run(host: Any) -> None:
        actual = _shadow_password(host, name)
        if locked:
            actual = actual.lstrip("!")  # usermod -L keeps the hash behind a '!'
        if actual != wanted.reveal():
            raise AssertionError(f"password hash: expected {REDACTED}, got a different hash")

    return _check(user, f"password hash is the policy's {REDACTED}", run)


def _authorized_keys_checks(user: UserSpec, keys: tuple[str, ...]) -> list[Check]:
    name = user.name

    def ssh_dir(host: Any) -> Any:
        account = _account(host, name)
        return host.file(f"{account.home}/.ssh"), host.file(f"{account.home}/.ssh/authorized_keys")

    def owned(path: Any, kind: str, mode: int) -> None:
        if not path.exists:
            raise AssertionError(f"{path.path} does not exist")
        _expect(f"{kind} owner", name, path.user)
        _expect(f"{kind} mode", f"{mode:04o}", f"{path.mode:04o}")

    def directory(host: Any) -> None:
        owned(ssh_dir(host)[0], "~/.ssh", 0o700)

    def key_file(host: Any) -> None:
        file_ = ssh_dir(host)[1]
        if not keys and not file_.exists:
            return  # "manage to empty" is met by no file as well as by an empty one
        owned(file_, "authorized_keys", 0o600)
        have = [
            line.strip()
            for line in file_.content_string.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if sorted(have) != sorted(keys):
            missing = [k for k in keys if k not in have]
            extra = [k for k in have if k not in keys]
            raise AssertionError(
                f"authorized_keys: expected exactly {len(keys)} key(s), got {len(have)}"
                + (f"; missing {_short(missing)}" if missing else "")
                + (f"; unexpected {_short(extra)}" if extra else "")
            )

    out = [
        _check(
            user,
            f"authorized_keys holds exactly the {len(keys)} given key(s), "
            "mode 0600, owned by the user",
            key_file,
        )
    ]
    if keys:
        out.insert(0, _check(user, "~/.ssh is mode 0700, owned by the user", directory))
    return out


def _short(keys: list[str]) -> str:
    """Keys by their first and last words (type and comment): enough to tell them apart."""
    shown = []
    for key in keys:
        parts = key.split()
        shown.append(f"{parts[0]} … {parts[-1]}" if len(parts) >= 3 else key[:24] + "…")
    return ", ".join(shown)
