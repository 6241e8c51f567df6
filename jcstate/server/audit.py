"""The audit log as investigators read it: actions in words, actors by name, outcome and reason.

Rows keep what the routes wrote (``action`` is the route, ``METHOD /api/v1/…/{template}``, so
an entry always says exactly which endpoint was called); this module names each route in words
(``command.erase``, ``policy.push``, ``token.revoke``) for the API, the CLI and its filters, and
shows a token's name beside its id. A route missing from the table keeps its route as its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jcstate.server.views import wire

__all__ = ["ACTION_NAMES", "action_name", "audit_view", "routes_named"]

_V1 = "/api/v1"
ACTION_NAMES: dict[str, str] = {
    f"POST {_V1}/revisions": "policy.push",
    f"POST {_V1}/revisions/{{revision}}/rollback": "policy.rollback",
    f"PUT {_V1}/devices/{{ref}}/labels": "device.label",
    f"PATCH {_V1}/devices/{{ref}}/labels": "device.label",
    f"PATCH {_V1}/labels": "device.label",
    f"POST {_V1}/devices/{{ref}}/approve": "device.approve",
    f"POST {_V1}/devices/{{ref}}/revoke": "device.revoke",
    f"GET {_V1}/devices/{{ref}}/recovery-key": "device.recovery-key",
    f"POST {_V1}/device/escrow": "device.escrow",
    f"POST {_V1}/enroll": "device.enroll",
    f"POST {_V1}/tokens": "token.create",
    f"DELETE {_V1}/tokens/{{token_id}}": "token.revoke",
    f"POST {_V1}/connect-keys": "connect-key.create",
    f"DELETE {_V1}/connect-keys/{{key_id}}": "connect-key.revoke",
    f"POST {_V1}/totp/{{user}}": "totp.enroll",
    f"DELETE {_V1}/totp/{{user}}": "totp.remove",
    f"PUT {_V1}/passwords/{{ref}}": "password.set",
    f"POST {_V1}/commands/{{command_id}}/cancel": "command.cancel",
    f"POST {_V1}/commands/{{command_id}}/approve": "command.approve",
    f"POST {_V1}/commands/{{command_id}}/reject": "command.reject",
    "lapse": "command.lapse",  # the server, when an erase awaited approval for 24 h
    "POST /commands/{seq}/approve": "command.approve",  # the console's buttons
    "POST /commands/{seq}/reject": "command.reject",
    f"POST {_V1}/releases": "release.push",
    f"DELETE {_V1}/releases/{{version}}": "release.delete",
    f"GET {_V1}/audit": "audit.read",
    f"GET {_V1}/tokens": "token.list",
    f"POST {_V1}/devices/{{ref}}/commands/elevate": "command.elevate",
    f"POST {_V1}/devices/{{ref}}/commands/saved/{{saved}}": "command.saved",
    f"POST {_V1}/saved-commands": "saved-command.add",
    f"PATCH {_V1}/saved-commands/{{saved}}": "saved-command.edit",
    f"DELETE {_V1}/saved-commands/{{saved}}": "saved-command.remove",
    f"PUT {_V1}/saved-commands/{{saved}}/assignments/{{kind}}/{{ident}}": "saved-command.assign",
    f"DELETE {_V1}/saved-commands/{{saved}}/assignments/{{kind}}/{{ident}}": (
        "saved-command.unassign"
    ),
    "bootstrap": "server.bootstrap",
    # staged rollouts: by hand, and the server's own halt and promotion (actor "server")
    f"POST {_V1}/rollout/promote": "rollout.promote",
    f"POST {_V1}/rollout/abort": "rollout.abort",
    "POST /rollout/promote": "rollout.promote",  # the console's buttons
    "POST /rollout/abort": "rollout.abort",
    "POST /devices/{device}/elevate": "command.elevate",
    "rollout:promote": "rollout.promote",
    "rollout:halt": "rollout.halt",
}
for _action in ("lock", "restart", "shutdown", "run", "update", "erase"):
    ACTION_NAMES[f"POST {_V1}/devices/{{ref}}/commands/{_action}"] = f"command.{_action}"
    ACTION_NAMES[f"POST {_V1}/commands/batch/{_action}"] = f"command.{_action}"


def action_name(route: str) -> str:
    """``command.erase`` for ``POST /api/v1/devices/{ref}/commands/erase``; other routes as
    they are."""
    return ACTION_NAMES.get(route, route)


def routes_named(name: str) -> list[str]:
    """The routes an ``--action`` filter means: a name (``command.erase``), a family
    (``command``: every ``command.*``) or a route written out."""
    found = [r for r, n in ACTION_NAMES.items() if n == name or n.startswith(name + ".")]
    return found or [name]


def audit_view(row: Mapping[str, Any], token_names: Mapping[str, str]) -> dict[str, Any]:
    """An audit row for the API: ``action`` in words (``route`` as written), ``actorName``,
    ``reason`` out of the detail, the time in RFC 3339."""
    actor = str(row["actor"])
    kind, _, ident = actor.partition(":")
    name = token_names.get(ident) if kind == "token" else None
    detail = row.get("detail") or {}
    return wire(
        {
            "id": row["id"],
            "at": row["at"],
            "actor": actor,
            "actorName": name or (ident if kind in ("admin", "user") else actor),
            "role": row.get("role"),
            "action": action_name(str(row["action"])),
            "route": row["action"],
            "target": row.get("target"),
            "outcome": row["outcome"],
            "reason": detail.get("reason") if isinstance(detail, dict) else None,
            "detail": detail,
        }
    )
