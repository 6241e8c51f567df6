"""Fields a policy sets that a backend cannot manage on its OS: reported, never dropped silently.

Puppet's ``has_feature`` idea: each backend declares ``supports``; whatever else a user entry
sets is listed as skipped on its changes and as a plan warning (old Salt ``win_useradd`` ignored
such arguments without a word).
"""

from __future__ import annotations

from jcstate.modules.users.model import UserSpec

__all__ = ["skipped"]


def skipped(spec: UserSpec, supported: frozenset[str]) -> list[str]:
    """Fields the policy sets that this OS cannot manage (reported, never silently dropped)."""
    given = {
        "uid": spec.uid,
        "fullName": spec.full_name,
        "shell": spec.shell,
        "home": spec.home,
        "primaryGroup": spec.primary_group,
        "groups": spec.groups,
        "admin": spec.admin,
        "password": spec.password_hash or spec.password_ref,
        "sshAuthorizedKeys": spec.ssh_authorized_keys,
        "expires": spec.expires,
        "hidden": spec.hidden,
        "removeHome": spec.remove_home or None,
    }
    return sorted(k for k, v in given.items() if v is not None and k not in supported)
