"""Saved commands: argv an administrator stores once, that command runners may only run.

A saved command is a name, an argv (never a shell line: nothing typed later is parsed by a
shell), an optional timeout and description, and a ``version`` that each edit increments. It
is *assigned* to admin tokens and named console accounts that have the ``command-runner`` role;
such a caller may queue exactly those, with nothing of its own added (no argument, no user, no
shell). Managers and administrators may run any saved command.

Running one queues an ordinary ``run`` command (:mod:`jcstate.server.commands`): the same
journal, the same at-most-once delivery; the command's row keeps the saved command's name and
version, so ``command show`` and the audit say which it was.

Editing a saved command keeps its assignments (the administrator who edits it is the one who
assigned it; re-assigning after every edit would train people to click through), and the edit
is audited with the programs before and after and the new version. Removing one removes its
assignments, and so does removing a console account (a later account of the same name starts
with none; token ids are never reused). The tables are created by migration ``0008``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from jcstate.errors import JcstateError, PlanError
from jcstate.modules.commands import parse_command
from jcstate.server import db
from jcstate.server.roles import COMMAND_RUNNER
from jcstate.server.store import Store
from jcstate.server.views import wire

__all__ = ["NAME", "SavedCommands", "SavedConflict", "assignee", "saved_view"]

Row = dict[str, Any]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
KINDS = ("token", "admin")  # an admin token (its id) or a named console account (its name)

saved_commands = sa.Table(
    "saved_commands",
    db.METADATA,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("argv", sa.JSON, nullable=False),
    sa.Column("timeout", sa.Integer),  # None: the agent's default (300 s)
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # 1, then +1 on each edit
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

saved_assignments = sa.Table(
    "saved_assignments",
    db.METADATA,
    sa.Column(
        "saved_name",
        sa.String(100),
        sa.ForeignKey("saved_commands.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("kind", sa.String(10), primary_key=True),  # token | admin
    sa.Column("ident", sa.String(100), primary_key=True),  # token id | account name
    sa.Column("assigned_at", sa.Float, nullable=False),
    sa.Column("assigned_by", sa.String(200), nullable=False),
)


class SavedConflict(JcstateError):
    """The name is taken, or the saved command changed under an edit."""


def assignee(actor: str) -> tuple[str, str]:
    """(kind, ident) of an actor as the audit writes it: ``token:ID`` or ``admin:NAME``."""
    kind, _, ident = actor.partition(":")
    return kind, ident


def check_spec(argv: list[str], timeout: int | None) -> None:
    """The agent's own validation of a ``run`` with this argv and timeout (PlanError)."""
    run: dict[str, Any] = {"argv": argv}
    if timeout is not None:
        run["timeout"] = timeout
    parse_command({"id": "saved", "action": "run", "run": run})


def run_spec(row: Row) -> dict[str, Any]:
    """The ``run`` part of the command a saved command queues."""
    run: dict[str, Any] = {"argv": list(row["argv"])}
    if row["timeout"] is not None:
        run["timeout"] = row["timeout"]
    return run


def saved_view(row: Row, assignments: list[Row] | None = None) -> dict[str, Any]:
    """A saved command for the API; ``assignments`` only for those who may see them."""
    view: dict[str, Any] = {
        "name": row["name"],
        "argv": list(row["argv"]),
        "timeout": row["timeout"],
        "description": row["description"],
        "version": row["version"],
        "createdAt": row["created_at"],
        "createdBy": row["created_by"],
        "updatedAt": row["updated_at"],
        "updatedBy": row["updated_by"],
    }
    if assignments is not None:
        view["assignedTo"] = [
            {"kind": a["kind"], "id": a["ident"], "assignedBy": a["assigned_by"]}
            for a in assignments
        ]
    return wire(view)


class SavedCommands:
    """The ``saved_commands`` and ``saved_assignments`` tables, behind the store's engine."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, name: str) -> Row | None:
        s = saved_commands
        with self.store.engine.connect() as conn:
            row = conn.execute(s.select().where(s.c.name == name)).first()
        return None if row is None else dict(row._mapping)

    def list(self, assigned_to: tuple[str, str] | None = None) -> list[Row]:
        """Every saved command by name, or only those assigned to (kind, ident)."""
        s, a = saved_commands, saved_assignments
        q = s.select().order_by(s.c.name)
        if assigned_to is not None:
            q = q.where(
                s.c.name.in_(
                    sa.select(a.c.saved_name).where(
                        a.c.kind == assigned_to[0], a.c.ident == assigned_to[1]
                    )
                )
            )
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def assignments(self) -> dict[str, list[Row]]:
        """Saved command name → its assignments."""
        a = saved_assignments
        out: dict[str, list[Row]] = {}
        with self.store.engine.connect() as conn:
            for r in conn.execute(a.select().order_by(a.c.kind, a.c.ident)):
                out.setdefault(r.saved_name, []).append(dict(r._mapping))
        return out

    def add(
        self,
        name: str,
        argv: list[str],
        timeout: int | None,
        description: str,
        actor: str,
    ) -> Row:
        """Store a new saved command; JcstateError for a bad name or argv, or a name in use."""
        if not NAME.fullmatch(name):
            raise JcstateError(
                f"saved command name {name!r}: letters, digits, '.', '_' or '-' "
                "(at most 100, starting with a letter or digit)"
            )
        _check(argv, timeout)
        now = time.time()
        row = {
            "name": name,
            "argv": list(argv),
            "timeout": timeout,
            "description": description,
            "version": 1,
            "created_at": now,
            "created_by": actor,
            "updated_at": now,
            "updated_by": actor,
        }
        try:
            with self.store.transaction() as conn:
                conn.execute(saved_commands.insert().values(**row))
        except IntegrityError:
            raise SavedConflict(
                f"a saved command {name} exists: jcstate command saved edit {name} changes it"
            ) from None
        return row

    def edit(
        self,
        name: str,
        actor: str,
        argv: list[str] | None = None,
        timeout: int | None = None,
        description: str | None = None,
    ) -> tuple[Row, Row] | None:
        """Change what is given and bump the version: (before, after); None if no such name.
        Assignments are kept."""
        s = saved_commands
        with self.store.transaction() as conn:
            found = conn.execute(s.select().where(s.c.name == name)).first()
            if found is None:
                return None
            before = dict(found._mapping)
            after = dict(before)
            if argv is not None:
                after["argv"] = list(argv)
            if timeout is not None:
                after["timeout"] = timeout
            if description is not None:
                after["description"] = description
            if argv is None and timeout is None and description is None:
                raise JcstateError("nothing to change: give argv, timeout or description")
            _check(after["argv"], after["timeout"])
            after.update(version=before["version"] + 1, updated_at=time.time(), updated_by=actor)
            # compare-and-set on the version: two edits at once cannot both claim version n+1
            res = conn.execute(
                s.update()
                .where(s.c.name == name, s.c.version == before["version"])
                .values(**{k: v for k, v in after.items() if k != "name"})
            )
            if res.rowcount != 1:
                raise SavedConflict(f"saved command {name} changed meanwhile: try again")
        return before, after

    def remove(self, name: str) -> bool:
        """Remove a saved command and its assignments; False if there was none."""
        s, a = saved_commands, saved_assignments
        with self.store.transaction() as conn:
            # explicit: SQLite only cascades with foreign_keys on, which an old file may lack
            conn.execute(a.delete().where(a.c.saved_name == name))
            res = conn.execute(s.delete().where(s.c.name == name))
        return res.rowcount > 0

    def assign(self, name: str, kind: str, ident: str, actor: str) -> bool:
        """Assign to a command runner; True if new, False if it already was. JcstateError when
        the saved command, the token or the account is missing, or is not a command runner."""
        if self.get(name) is None:
            raise LookupError(f"no saved command {name} (jcstate command saved list)")
        self._check_runner(kind, ident)
        row = {
            "saved_name": name,
            "kind": kind,
            "ident": ident,
            "assigned_at": time.time(),
            "assigned_by": actor,
        }
        try:
            with self.store.transaction() as conn:
                conn.execute(saved_assignments.insert().values(**row))
        except IntegrityError:
            return False
        return True

    def unassign(self, name: str, kind: str, ident: str) -> bool:
        a = saved_assignments
        with self.store.transaction() as conn:
            res = conn.execute(
                a.delete().where(a.c.saved_name == name, a.c.kind == kind, a.c.ident == ident)
            )
        return res.rowcount > 0

    def assigned(self, name: str, kind: str, ident: str) -> bool:
        a = saved_assignments
        with self.store.engine.connect() as conn:
            found = conn.execute(
                sa.select(a.c.saved_name).where(
                    a.c.saved_name == name, a.c.kind == kind, a.c.ident == ident
                )
            ).first()
        return found is not None

    def _check_runner(self, kind: str, ident: str) -> None:
        if kind == "token":
            row = self.store.token(ident)
            what = f"token {ident}"
            hint = "jcstate token list"
        elif kind == "admin":
            from jcstate.server.admins import AdminAccounts

            row = AdminAccounts(self.store).get(ident)
            what = f"console account {ident}"
            hint = "jcstate admin list"
        else:
            raise JcstateError(f"assign to a token or an admin account, not {kind!r}")
        if row is None:
            raise LookupError(f"no {what} ({hint})")
        if row.get("revoked_at") is not None:
            raise JcstateError(f"{what} is revoked")
        if row["role"] != COMMAND_RUNNER:
            raise JcstateError(
                f"{what} has the {row['role']} role: saved commands are assigned to "
                f"{COMMAND_RUNNER}s (managers and administrators may run any saved command)"
            )


def _check(argv: list[str], timeout: int | None) -> None:
    try:
        check_spec(argv, timeout)
    except PlanError as exc:
        raise JcstateError(str(exc).replace("command saved: ", "")) from None
