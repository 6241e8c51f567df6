"""What a device's reports say about it: drift, and why it failed (docs/state-model.md).

A device sends two kinds of report. After a converge (``kind: converge``) the report holds every
planned change with its result; between converges the agent plans again without applying
(``kind: plan``) and sends what it found. Either way the server keeps, per device, the changes
of that last plan that the device has *not* applied, each with its status and message:

- ``refused``: the plan refused it (lock-out safety, a missing TOTP secret, …): the message
  says why and what to do;
- ``failed`` / ``skipped``: the converge tried it and it failed (or a change it needs failed);
- ``pending``: a plan between converges found it (someone changed the machine by hand); the
  next converge applies it.

``drift`` is "that list is not empty". Right after a converge in which every change applied,
it is empty, so drift is false. A converge that could not plan at all (no document, a worker
that crashed) leaves drift unknown (None) and says why in ``errors``.

Also here: what the server can tell *before* a push reaches any device will certainly be
refused there (:func:`certain_refusals`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["certain_refusals", "failures", "last_plan"]

_NOT_APPLIED = ("refused", "failed", "skipped")
_SYMBOL = {"create": "+", "update": "~", "remove": "-", "run": ">"}
MAX_ITEMS = 50  # changes kept per device (the report itself keeps all of them)


def _change(entry: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    action = str(entry.get("action") or "")
    return {
        "kind": str(entry.get("kind") or ""),
        "name": str(entry.get("name") or ""),
        "action": action,
        "change": f"{_SYMBOL.get(action, '?')} {entry.get('kind')} {entry.get('name')}",
        "status": status,
        "message": message[:1000],
    }


def last_plan(
    report: dict[str, Any], at: float, previous: dict[str, Any] | None = None
) -> tuple[bool | None, dict[str, Any]]:
    """(drift, what to keep) from a device's report (the body it posted)."""
    kind = "plan" if report.get("kind") == "plan" else "converge"
    body = report.get("report") if isinstance(report.get("report"), dict) else {}
    errors = [str(e)[:1000] for e in body.get("errors") or []]
    if report.get("error"):
        errors.append(str(report["error"])[:1000])
    changes: list[dict[str, Any]] = []
    if kind == "converge":
        for entry in body.get("results") or []:
            if isinstance(entry, dict) and entry.get("status") in _NOT_APPLIED:
                message = str(entry.get("message") or entry.get("error") or "")
                changes.append(_change(entry, str(entry["status"]), message))
    else:
        tried = {  # the last converge's failures, kept while the change is still pending
            (c["kind"], c["name"]): c
            for c in (previous or {}).get("changes") or []
            if c.get("status") in ("failed", "skipped")
        }
        for entry in body.get("changes") or []:
            if not isinstance(entry, dict):
                continue
            if entry.get("error"):
                changes.append(_change(entry, "refused", str(entry["error"])))
                continue
            key = (str(entry.get("kind") or ""), str(entry.get("name") or ""))
            changes.append(tried.get(key) or _change(entry, "pending", "not applied yet"))
    planned = bool(body) and not report.get("error")
    drift: bool | None = bool(changes) if planned else None
    if planned and errors:
        drift = True
    kept = {
        "kind": kind,
        "at": at,
        "etag": report.get("etag"),
        "counts": body.get("counts") or {},
        "changes": changes[:MAX_ITEMS],
        "more": max(0, len(changes) - MAX_ITEMS),
        "errors": errors[:MAX_ITEMS],
    }
    return drift, kept


def failures(plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Why the device's last plan did not (or will not) apply: each refused, failed or skipped
    change with its message, then plan-wide errors (``change`` empty)."""
    if not plan:
        return []
    out = [
        {"change": c["change"], "status": c["status"], "message": c["message"]}
        for c in plan.get("changes") or []
        if c.get("status") in _NOT_APPLIED
    ]
    out += [{"change": "", "status": "error", "message": e} for e in plan.get("errors") or []]
    return out


def certain_refusals(spec: dict[str, Any], totp_users: set[str]) -> list[dict[str, str]]:
    """What a device given this document will certainly refuse, known on the server alone.

    ``totp_users``: the users with an enrolled TOTP secret on the server. An SSH MFA user
    without one is refused on every device (the agent will not write an MFA configuration
    that would lock that user out); the message is the one the device will report.
    """
    from jcstate.server.render import needed_secrets

    wanted, _ = needed_secrets(spec)
    return [
        {
            "change": f"+ ssh-mfa {user}",
            "status": "refused",
            "message": f"no TOTP secret for {user}: enroll one with `jcstate totp enroll {user}`",
        }
        for user in wanted
        if user not in totp_users
    ]
