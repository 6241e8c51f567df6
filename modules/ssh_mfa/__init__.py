"""``sshMfa``: require a TOTP code after the password on SSH, for the listed users (Linux).

The model is what the policy says, nothing more::

    sshMfa:
      enabled: true
      users: [alice]        # must pass a TOTP code after the password
      allowLockout: false   # refuse plans that would leave a listed user no way to log in

TOTP secrets never come from the policy: the plan asks the run's secret source
(``jcstate apply --secrets FILE`` standalone, the server's payload for an agent). How the
machine is changed is the Linux backend's business (``linux.py``); ``verify.py`` turns the model
into testinfra checks. Users not listed keep logging in exactly as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jcstate.errors import PlanError
from jcstate.resource import Resource

__all__ = ["RESOURCE", "SshMfa", "parse"]

# shadow-utils' portable name rule. It also keeps names safe inside the PAM rule
# ("user notin a:b") and the sshd Match line ("Match User a,b"): no ':', ',', space or glob.
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?")


@dataclass(frozen=True)
class SshMfa:
    """The desired SSH MFA state. ``users`` is sorted and without duplicates."""

    enabled: bool
    users: tuple[str, ...] = ()
    allow_lockout: bool = False

    @property
    def mfa_users(self) -> tuple[str, ...]:
        """Users who must pass a code: none at all when MFA is disabled."""
        return self.users if self.enabled else ()


def parse(section: Any) -> SshMfa:
    """Turn the plain ``spec.sshMfa`` mapping into an :class:`SshMfa` (raises PlanError)."""
    if not isinstance(section, dict):
        raise PlanError("sshMfa: expected a mapping with 'enabled' and 'users'")
    unknown = set(section) - {"enabled", "users", "allowLockout"}
    if unknown:
        raise PlanError(f"sshMfa: unknown field(s): {', '.join(sorted(unknown))}")
    enabled = section.get("enabled")
    if not isinstance(enabled, bool):
        raise PlanError("sshMfa.enabled: expected true or false")
    users = section.get("users") or []
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise PlanError("sshMfa.users: expected a list of user names")
    bad = [u for u in users if not _NAME.fullmatch(u)]
    if bad:
        raise PlanError(f"sshMfa.users: not a valid Linux user name: {', '.join(bad)}")
    allow = section.get("allowLockout", False)
    if not isinstance(allow, bool):
        raise PlanError("sshMfa.allowLockout: expected true or false")
    return SshMfa(enabled=enabled, users=tuple(sorted(set(users))), allow_lockout=allow)


RESOURCE = Resource(
    key="sshMfa",
    parse=parse,
    backends={"linux": "jcstate.modules.ssh_mfa.linux:BACKEND"},
    checks="jcstate.modules.ssh_mfa.verify:checks",
)
