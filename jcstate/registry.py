"""The resources jcstate manages, in apply order. Adding a resource is one line here."""

from __future__ import annotations

from jcstate.resource import Resource

__all__ = ["RESOURCES", "resource"]


def _resources() -> list[Resource]:
    from jcstate.modules.commands import RESOURCE as commands
    from jcstate.modules.filevault import RESOURCE as file_vault
    from jcstate.modules.groups import RESOURCE as groups
    from jcstate.modules.ssh_mfa import RESOURCE as ssh_mfa
    from jcstate.modules.users import RESOURCE as users

    return [groups, users, ssh_mfa, file_vault, commands]


RESOURCES: list[Resource] = _resources()


def resource(key: str) -> Resource:
    for res in RESOURCES:
        if res.key == key:
            return res
    raise KeyError(key)
