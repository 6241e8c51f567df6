"""Which devices a push changes: the "devices affected" a revision records.

A device is affected when the policies it matches differ between the old and the new repo:
another set of policies, or a matched policy whose selector, variables or spec changed. This is
decided from the device's labels, OS and names (what selectors read), without rendering 10,000
documents inside the push; a template reading facts that changed is not a push's doing anyway.
"""

from __future__ import annotations

from typing import Any

from jcstate.server.render import device_of

__all__ = ["affected_devices"]


def _fingerprint(repo: Any, device: Any) -> tuple[Any, ...]:
    if repo is None:
        return ()
    return tuple(
        (p.name, repr(p.selector), repr(p.vars), repr(p.spec))
        for p in repo.policies
        if p.matches(device)
    )


def affected_devices(old: Any, new: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Ids of active devices whose matched policies differ between ``old`` and ``new``."""
    memo: dict[tuple[Any, ...], bool] = {}
    out = []
    for row in rows:
        if row["status"] != "active":
            continue
        labels = tuple(sorted((row.get("labels") or {}).items()))
        key = (row["os"], row["id"], row["hostname"], row.get("os_version"), labels)
        if key not in memo:
            target = device_of(row)
            memo[key] = _fingerprint(old, target) != _fingerprint(new, target)
        if memo[key]:
            out.append(row["id"])
    return out
