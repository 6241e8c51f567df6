"""Staged rollout: a new revision goes to a canary wave first, the rest follows on its own.

``jcstate push REPO --canary 5% --wait 10m --halt-on 1`` stores the revision and a rollout row
in one transaction. From then on every device is served by its wave (:class:`Serving`):

- the *canary* wave (chosen at the push and fixed: :func:`choose_canaries`) gets the new
  revision;
- every other device, including one enrolled during the rollout, stays on the revision the
  fleet had before (``previous``).

The server checks the canaries (:func:`check`: in its background loop every second, and at once
when a canary reports). A canary is *converged* when its last converge report was on the
document it is sent now (its applied etag) and ok, *failed* when that report was not ok. When
``halt_on`` canaries have failed the rollout is *halted*: nothing more happens on its own, the
rest stays on the previous revision. When every canary has converged ok, and has stayed so for
``wait`` seconds, the rollout is *promoted*: the new revision is the fleet's. ``promote``
does that at once; ``abort`` sends everyone, canaries included, back to the previous revision
(the aborted revision is never served again; history keeps it).

Several server processes may run the check at once: each state change is an ``UPDATE … WHERE
state = <the state it was read in>``, so exactly one of them wins and audits it; the one
rollout in progress is enforced by a unique column (``open_slot``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from jcstate.errors import JcstateError
from jcstate.server import db

__all__ = [
    "RolloutError",
    "RolloutInProgress",
    "Serving",
    "abort",
    "check",
    "choose_canaries",
    "open_rollout",
    "parse_canary",
    "plan",
    "promote",
    "serving",
    "start",
    "status",
]

SERVER = "server"  # the actor of automatic halts and promotions in the audit log
OPEN = ("canary", "halted")


class RolloutError(JcstateError):
    """A staged push that cannot start (no previous revision, an empty canary wave)."""


class RolloutInProgress(JcstateError):
    """A push (or a second rollout) while a rollout is in progress."""


@dataclass(frozen=True)
class Serving:
    """Which revision each device is sent: ``revision`` for everyone but the canaries of a
    rollout in progress, who get ``canary_revision``; and the secrets generation."""

    revision: int | None
    secrets: float
    canary_revision: int | None = None
    canaries: frozenset[str] = frozenset()
    rollout: int | None = None

    def of(self, device_id: str | None = None) -> tuple[int | None, float]:
        """(revision, secrets generation) of a device; without one, of the non-canaries."""
        if self.canaries and device_id in self.canaries:
            return self.canary_revision, self.secrets
        return self.revision, self.secrets


# -- choosing the canary wave --------------------------------------------------------------
_PERCENT = re.compile(r"^(\d{1,3}(?:\.\d{1,3})?)%$")


def parse_canary(text: str) -> tuple[str, Any]:
    """``5%`` → ("percent", 5.0); ``label:ring=0,site=paris`` → ("labels", {...}).

    Raises RolloutError saying what is accepted."""
    text = text.strip()
    match = _PERCENT.match(text)
    if match:
        percent = float(match.group(1))
        if not 0 < percent <= 100:
            raise RolloutError(f"canary {text!r}: a percentage above 0% and at most 100%")
        return "percent", percent
    if text.startswith("label:"):
        labels: dict[str, str] = {}
        for pair in text[len("label:") :].split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise RolloutError(
                    f"canary {text!r}: expected label:KEY=VALUE[,KEY=VALUE], e.g. label:ring=0"
                )
            labels[key.strip()] = value.strip()
        return "labels", labels
    raise RolloutError(f"canary {text!r}: give a percentage (5%) or labels (label:ring=0)")


def seed_of(files: dict[str, str]) -> str:
    """The digest of a repo's files: what the percentage choice hashes device ids with."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def choose_canaries(canary: str, devices: list[dict[str, Any]], seed: str) -> list[str]:
    """The canary wave's device ids among ``devices`` (active device rows).

    ``label:k=v``: every device with those labels. ``N%``: the ceil(N% of the fleet) devices
    (at least one) whose ``sha256(seed + ":" + device id)`` is smallest: the same repo content
    and fleet always give the same wave (so the dry run shows the wave the push will use),
    and another content gives another sample, so no device is always the guinea pig.
    """
    kind, value = parse_canary(canary)
    if kind == "labels":
        return sorted(
            d["id"]
            for d in devices
            if all((d.get("labels") or {}).get(k) == v for k, v in value.items())
        )
    if not devices:
        return []
    count = max(1, math.ceil(len(devices) * value / 100 - 1e-9))
    ranked = sorted(devices, key=lambda d: hashlib.sha256(f"{seed}:{d['id']}".encode()).digest())
    return sorted(d["id"] for d in ranked[:count])


# -- what is served ------------------------------------------------------------------------
def _stable_revision(conn: sa.Connection) -> int | None:
    """The newest revision that no aborted rollout took back."""
    r, ro = db.revisions, db.rollouts
    aborted = sa.select(ro.c.revision).where(ro.c.state == "aborted")
    value = conn.execute(sa.select(sa.func.max(r.c.id)).where(r.c.id.not_in(aborted))).scalar()
    return None if value is None else int(value)


def _open(conn: sa.Connection) -> dict[str, Any] | None:
    row = conn.execute(db.rollouts.select().where(db.rollouts.c.open_slot == 1)).first()
    return None if row is None else dict(row._mapping)


def serving(store: Any) -> Serving:
    """What every device is sent now: read from the database (the server caches it)."""
    with store.engine.connect() as conn:
        secrets = float(conn.execute(sa.select(sa.func.max(db.secrets.c.updated_at))).scalar() or 0)
        ro = _open(conn)
        if ro is not None:
            return Serving(
                ro["previous"], secrets, ro["revision"], frozenset(ro["devices"]), ro["id"]
            )
        return Serving(_stable_revision(conn), secrets)


def open_rollout(store: Any) -> dict[str, Any] | None:
    """The rollout in progress (canary or halted), or None."""
    with store.engine.connect() as conn:
        return _open(conn)


def newest(store: Any) -> dict[str, Any] | None:
    ro = db.rollouts
    with store.engine.connect() as conn:
        row = conn.execute(ro.select().order_by(ro.c.id.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def refuse_if_open(conn: sa.Connection) -> None:
    """In a push's transaction: refuse while a rollout is in progress."""
    ro = _open(conn)
    if ro is not None:
        raise RolloutInProgress(
            f"rollout {ro['id']} of revision {ro['revision']} is in progress ({ro['state']}): "
            "one rollout at a time; finish it first with `jcstate rollout promote` or "
            "`jcstate rollout abort` (`jcstate rollout status` shows where it stands)"
        )


def plan(
    conn: sa.Connection,
    *,
    canary: str,
    wait: float,
    halt_on: int,
    seed: str,
    actor: str,
) -> dict[str, Any]:
    """In the push's transaction, before its revision is stored (after
    :func:`refuse_if_open`): the rollout row to :func:`start`. Raises RolloutError when there
    is nothing to stage against, or nobody in the canary wave."""
    previous = _stable_revision(conn)
    if previous is None:
        raise RolloutError(
            "a staged rollout needs a revision for the rest of the fleet to stay on, and there "
            "is none yet: push once without --canary"
        )
    d = db.devices
    rows = [
        dict(r._mapping)
        for r in conn.execute(sa.select(d.c.id, d.c.labels).where(d.c.status == "active"))
    ]
    devices = choose_canaries(canary, rows, seed)
    if not devices:
        raise RolloutError(
            f"the canary wave {canary} has no active device; label one (jcstate device label "
            "DEVICE add KEY=VALUE) or choose a percentage"
        )
    return {
        "previous": previous,
        "canary": canary,
        "devices": devices,
        "wait": float(wait),
        "halt_on": int(halt_on),
        "state": "canary",
        "open_slot": 1,
        "created_at": time.time(),
        "created_by": actor,
    }


def start(conn: sa.Connection, revision: int, planned: dict[str, Any]) -> int:
    """In the push's transaction: store the rollout of ``revision`` :func:`plan` made."""
    res = conn.execute(db.rollouts.insert().values(revision=revision, **planned))
    return int(res.inserted_primary_key[0])


# -- moving it on --------------------------------------------------------------------------
def _end(
    store: Any,
    rollout_id: int,
    state: str,
    from_states: tuple[str, ...],
    actor: str,
    reason: str,
) -> bool:
    """Move a rollout to ``state`` if it is still in one of ``from_states``; True if this call
    did (of several servers, exactly one does). Wakes every device: some change revision."""
    ro = db.rollouts
    values: dict[str, Any] = {"state": state, "reason": reason}
    if state in ("promoted", "aborted"):
        values.update(open_slot=None, ended_at=time.time(), ended_by=actor)
    with store.transaction() as conn:
        res = conn.execute(
            ro.update().where(ro.c.id == rollout_id, ro.c.state.in_(from_states)).values(**values)
        )
        if res.rowcount and state != "halted":
            store.notify(conn, "all")
    return bool(res.rowcount)


def promote(store: Any, rollout_id: int, actor: str, reason: str, force: bool = False) -> bool:
    """Send the rollout's revision to everyone (``force``: a halted rollout too)."""
    states = OPEN if force else ("canary",)
    return _end(store, rollout_id, "promoted", states, actor, reason)


def abort(store: Any, rollout_id: int, actor: str, reason: str) -> bool:
    """Send everyone, canaries included, back to the previous revision."""
    return _end(store, rollout_id, "aborted", OPEN, actor, reason)


def _device_state(ctx: Any, row: dict[str, Any], expected: str, now: float) -> str:
    """converged | failed | pending | offline, against the etag the device is sent now."""
    if row.get("last_report_at") is not None and row.get("applied_etag") == expected:
        return "converged" if row.get("last_report_ok") else "failed"
    seen = ctx.store.seen_at(row)
    if seen is None or now - seen >= ctx.online_after:
        return "offline"
    return "pending"


def _canaries(ctx: Any, ro: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """The rollout's canaries still active, each with its state and first failure."""
    from jcstate.server.states import failures

    secrets = ctx.serving().secrets
    rows, _ = ctx.store.query_devices(ids=list(ro["devices"]), status="active")
    out = []
    for row in rows:
        expected = ctx.renderer.etag(row, (ro["revision"], secrets))
        state = _device_state(ctx, row, expected, now)
        entry = {"id": row["id"], "hostname": row["hostname"], "state": state}
        if state == "failed":
            why = failures(row.get("last_plan"))
            entry["reason"] = why[0]["message"] if why else "the converge failed"
        out.append(entry)
    return out


def check(ctx: Any, now: float | None = None) -> str | None:
    """Halt or promote the rollout in its canary phase when its canaries say so; what
    happened ("halted", "promoted"), or None. Safe to run in several server processes."""
    store = ctx.store
    ro = open_rollout(store)
    if ro is None or ro["state"] != "canary":
        return None
    now = time.time() if now is None else now
    canaries = _canaries(ctx, ro, now)
    failed = [c for c in canaries if c["state"] == "failed"]
    if len(failed) >= ro["halt_on"]:
        names = ", ".join(f"{c['hostname']}: {c['reason']}" for c in failed[:5])
        reason = f"{len(failed)} canar{'y' if len(failed) == 1 else 'ies'} failed ({names})"
        if _end(store, ro["id"], "halted", ("canary",), SERVER, reason[:2000]):
            store.audit(
                SERVER,
                "rollout:halt",
                "ok",
                target=str(ro["revision"]),
                detail={"rollout": ro["id"], "failed": [c["id"] for c in failed]},
            )
            return "halted"
        return None
    r = db.rollouts
    all_ok = bool(canaries) and all(c["state"] == "converged" for c in canaries)
    ok_at = ro["canaries_ok_at"]
    if all_ok and ok_at is None:
        ok_at = now
        with store.transaction() as conn:
            conn.execute(
                r.update()
                .where(r.c.id == ro["id"], r.c.state == "canary", r.c.canaries_ok_at.is_(None))
                .values(canaries_ok_at=now)
            )
    elif not all_ok and ok_at is not None:
        with store.transaction() as conn:
            conn.execute(
                r.update()
                .where(r.c.id == ro["id"], r.c.state == "canary")
                .values(canaries_ok_at=None)
            )
        return None
    if all_ok and now >= ok_at + ro["wait"]:
        reason = f"every canary converged ok and stayed so for {_duration(ro['wait'])}"
        if promote(store, ro["id"], SERVER, reason):
            store.audit(
                SERVER,
                "rollout:promote",
                "ok",
                target=str(ro["revision"]),
                detail={"rollout": ro["id"], "automatic": True},
            )
            return "promoted"
    return None


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# -- status --------------------------------------------------------------------------------
def status(ctx: Any, now: float | None = None) -> dict[str, Any] | None:
    """The newest rollout, its waves with per-wave counts (against the revision each device
    is sent now) and what it waits for; None when there was never one."""
    ro = newest(ctx.store)
    if ro is None:
        return None
    now = time.time() if now is None else now
    serve = ctx.serving()
    canary_ids = set(ro["devices"])
    rows, _ = ctx.store.query_devices(status="active")
    waves: dict[str, dict[str, Any]] = {}
    for name in ("canary", "rest"):
        waves[name] = {
            "name": name,
            "revision": None,
            "devices": 0,
            **dict.fromkeys(("pending", "converged", "failed", "offline"), 0),
        }
    canaries = []
    for row in rows:
        wave = waves["canary" if row["id"] in canary_ids else "rest"]
        generation = serve.of(row["id"])
        wave["revision"] = generation[0]
        state = _device_state(ctx, row, ctx.renderer.etag(row, generation), now)
        wave["devices"] += 1
        wave[state] += 1
        if row["id"] in canary_ids:
            canaries.append({"id": row["id"], "hostname": row["hostname"], "state": state})
    if ro["state"] == "canary":
        for wave in waves.values():
            wave["revision"] = ro["revision"] if wave["name"] == "canary" else ro["previous"]
    view = {
        "id": ro["id"],
        "revision": ro["revision"],
        "previous": ro["previous"],
        "state": ro["state"],
        "canary": ro["canary"],
        "waitSeconds": ro["wait"],
        "haltOn": ro["halt_on"],
        "created_at": ro["created_at"],
        "createdBy": ro["created_by"],
        "canaries_ok_at": ro["canaries_ok_at"],
        "promotes_at": None,
        "ended_at": ro["ended_at"],
        "endedBy": ro["ended_by"],
        "reason": ro["reason"],
        "waves": [waves["canary"], waves["rest"]],
        "canaries": canaries,
        "waitingFor": _waiting_for(ro, canaries, now),
    }
    if ro["state"] == "canary" and ro["canaries_ok_at"] is not None:
        view["promotes_at"] = ro["canaries_ok_at"] + ro["wait"]
    return view


def _waiting_for(ro: dict[str, Any], canaries: list[dict[str, Any]], now: float) -> str | None:
    if ro["state"] == "halted":
        return (
            f"an admin: the rollout halted ({ro['reason']}); `jcstate rollout abort` sends "
            f"every device back to revision {ro['previous']}, `jcstate rollout promote --force` "
            f"sends revision {ro['revision']} to every device"
        )
    if ro["state"] != "canary":
        return None
    if not canaries:
        return "no active canary is left: promote or abort by hand"
    waiting = [c for c in canaries if c["state"] != "converged"]
    if waiting:
        by_state: dict[str, list[str]] = {}
        for c in waiting:
            by_state.setdefault(c["state"], []).append(c["hostname"])
        parts = [f"{state}: {', '.join(sorted(names)[:10])}" for state, names in by_state.items()]
        many = "canary" if len(waiting) == 1 else "canaries"
        detail = "; ".join(parts)
        return f"{len(waiting)} {many} to converge ok on revision {ro['revision']} ({detail})"
    if ro["canaries_ok_at"] is None:
        return "the server's next check (every canary has converged ok)"
    left = ro["canaries_ok_at"] + ro["wait"] - now
    return f"the wait: every canary converged ok; the rest follows in {max(0.0, left):.0f}s"
