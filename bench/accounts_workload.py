"""The accounts benchmark's workload, and how each contender is told about it.

One workload (20 groups, 100 users with home, shell, comment, the same SHA-512 hash and two
supplementary groups each) rendered three ways: a jcstate policy, an Ansible playbook, and the
shell floor (plain shadow-utils calls in a loop, one ``chpasswd -e`` for all hashes). Every
name is generated here from ``[a-z0-9]``, so the floor's shell script needs no quoting beyond
the comment's spaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["DRIFT_DELETED", "DRIFT_SHELL", "HASH", "SCENARIOS", "Group", "User", "Workload"]

# A throwaway test hash, never a real credential: `openssl passwd -6 -salt jcstatebench` of the
# password "bench-throwaway". The same hash for every user, as the issue asks.
HASH = (
    "$6$jcstatebench$WopAv6ia9XUbqNdV/pjx8pZ1O1xgkuGxeYIGzXeFJyqdBmKoyYBLyI43c8MuB1M058bCi5AkaY"
    ".U78tinqtK./"
)
# first apply on a fresh host; the same apply again; after changes made by hand
SCENARIOS = ("first", "noop", "drift")
SHELL = "/bin/bash"
DRIFT_SHELL = "/bin/sh"  # what the drift scenario sets by hand on one user
DRIFT_DELETED = 42  # the user (by number) the drift scenario deletes by hand
DRIFT_CHANGED = 7  # the user whose shell it changes


@dataclass(frozen=True)
class Group:
    name: str
    gid: int


@dataclass(frozen=True)
class User:
    name: str
    comment: str
    home: str
    shell: str
    groups: tuple[str, str]


@dataclass(frozen=True)
class Workload:
    """``groups`` groups and ``users`` users; user n joins groups n mod G and (n + 7) mod G."""

    n_groups: int = 20
    n_users: int = 100
    gid_base: int = 3000  # explicit gids: the same for every contender

    @property
    def groups(self) -> list[Group]:
        return [Group(f"bg{i:02d}", self.gid_base + i) for i in range(1, self.n_groups + 1)]

    @property
    def users(self) -> list[User]:
        names = [g.name for g in self.groups]
        return [
            User(
                name=f"bu{n:03d}",
                comment=f"Bench User {n}",
                home=f"/home/bu{n:03d}",
                shell=SHELL,
                groups=(names[n % len(names)], names[(n + 7) % len(names)]),
            )
            for n in range(1, self.n_users + 1)
        ]

    def user(self, number: int) -> User:
        return self.users[number - 1]

    # -- jcstate ------------------------------------------------------------------------------
    def policy(self) -> str:
        """A normal jcstate policy (SPEC section 2), the way an admin would write it."""
        lines = [
            "apiVersion: jcstate/v1",
            "kind: Policy",
            "metadata:",
            "  name: bench-accounts",
            f"  description: {self.n_groups} groups and {self.n_users} users (benchmark)",
            "selector:",
            "  os: [linux]",  # password.hash is Linux-only; the validator insists on saying so
            "vars:",
            f"  shell: {SHELL}",
            f'  hash: "{HASH}"',
            "spec:",
            "  groups:",
        ]
        for g in self.groups:
            lines += [f"    - name: {g.name}", f"      gid: {g.gid}"]
        lines.append("  users:")
        for u in self.users:
            lines += [
                f"    - name: {u.name}",
                f"      fullName: {u.comment}",
                f"      home: {u.home}",
                '      shell: "{{ vars.shell }}"',
                f"      groups: [{', '.join(u.groups)}]",
                '      password: {hash: "{{ vars.hash }}"}',
            ]
        return "\n".join(lines) + "\n"

    # -- Ansible ------------------------------------------------------------------------------
    def playbook(self) -> str:
        """group and user modules, each with a loop; the data is inline JSON (valid YAML)."""
        groups = [{"name": g.name, "gid": g.gid} for g in self.groups]
        users = [
            {
                "name": u.name,
                "comment": u.comment,
                "home": u.home,
                "shell": u.shell,
                "groups": list(u.groups),
            }
            for u in self.users
        ]
        play = [
            {
                "name": "bench accounts",
                "hosts": "localhost",
                "gather_facts": False,
                "vars": {"bench_hash": HASH},
                "tasks": [
                    {
                        "name": "groups",
                        "ansible.builtin.group": {
                            "name": "{{ item.name }}",
                            "gid": "{{ item.gid }}",
                            "state": "present",
                        },
                        "loop": groups,
                    },
                    {
                        "name": "users",
                        "ansible.builtin.user": {
                            "name": "{{ item.name }}",
                            "comment": "{{ item.comment }}",
                            "home": "{{ item.home }}",
                            "shell": "{{ item.shell }}",
                            "password": "{{ bench_hash }}",
                            "groups": "{{ item.groups }}",
                            "append": True,
                            "create_home": True,
                            "state": "present",
                        },
                        "loop": users,
                        "no_log": True,  # the hash is in the item's result otherwise
                    },
                ],
            }
        ]
        return json.dumps(play, indent=1) + "\n"

    # -- Salt ---------------------------------------------------------------------------------
    def salt_state(self) -> str:
        """An SLS file the way a Salt admin writes it: a Jinja loop over the data, one
        ``group.present`` per group, one ``user.present`` per user (its ``groups`` exact,
        ``password`` the hash as given), in that order (Salt's default: definition order)."""
        data = {
            "groups": [{"name": g.name, "gid": g.gid} for g in self.groups],
            "users": [
                {
                    "name": u.name,
                    "comment": u.comment,
                    "home": u.home,
                    "shell": u.shell,
                    "groups": list(u.groups),
                }
                for u in self.users
            ],
        }
        return (
            f"{{% set bench = {json.dumps(data)} %}}\n"
            "{% for g in bench.groups %}\n"
            "group-{{ g.name }}:\n"
            "  group.present:\n"
            "    - name: {{ g.name }}\n"
            "    - gid: {{ g.gid }}\n"
            "{% endfor %}\n"
            "{% for u in bench.users %}\n"
            "user-{{ u.name }}:\n"
            "  user.present:\n"
            "    - name: {{ u.name }}\n"
            "    - fullname: {{ u.comment }}\n"
            "    - home: {{ u.home }}\n"
            "    - createhome: True\n"
            "    - shell: {{ u.shell }}\n"
            f"    - password: '{HASH}'\n"
            "    - groups: {{ u.groups | json }}\n"
            "{% endfor %}\n"
        )

    # -- pyinfra ------------------------------------------------------------------------------
    def pyinfra_deploy(self) -> str:
        """A pyinfra deploy file: ``server.group`` and ``server.user`` in loops."""
        groups = [(g.name, g.gid) for g in self.groups]
        users = [(u.name, u.comment, u.home, u.shell, list(u.groups)) for u in self.users]
        return (
            "from pyinfra.operations import server\n\n"
            f"HASH = {HASH!r}\n"
            f"GROUPS = {groups!r}\n"
            f"USERS = {users!r}\n\n"
            "for name, gid in GROUPS:\n"
            "    server.group(name=f'group {name}', group=name, gid=gid)\n\n"
            "for name, comment, home, shell, groups in USERS:\n"
            "    server.user(\n"
            "        name=f'user {name}', user=name, comment=comment, home=home, shell=shell,\n"
            "        groups=groups, create_home=True, password=HASH,\n"
            "    )\n"
        )

    # -- the floor ----------------------------------------------------------------------------
    def floor_first(self, hashes_file: str) -> str:
        """What a careful admin's shell script does: no checks, one tool call per account."""
        out = ["set -e"]
        out += [f"groupadd -g {g.gid} {g.name}" for g in self.groups]
        out += [
            f"useradd -m -d {u.home} -s {u.shell} -c '{u.comment}' -G {','.join(u.groups)} {u.name}"
            for u in self.users
        ]
        out.append(f"chpasswd -e < {hashes_file}")
        return "\n".join(out) + "\n"

    def floor_hashes(self, users: list[User] | None = None) -> str:
        """chpasswd -e input: the hashes go through a file on stdin, never argv."""
        return "".join(f"{u.name}:{HASH}\n" for u in (users or self.users))

    def floor_drift(self, python: str, hashes_file: str) -> str:
        """Read the account files (what any tool must do), then fix exactly what drifted."""
        gone, changed = self.user(DRIFT_DELETED), self.user(DRIFT_CHANGED)
        return (
            "\n".join(
                [
                    "set -e",
                    f"{python} -c '{FLOOR_READ}'",
                    f"useradd -m -d {gone.home} -s {gone.shell} -c '{gone.comment}' "
                    f"-G {','.join(gone.groups)} {gone.name}",
                    f"chpasswd -e < {hashes_file}",
                    f"usermod -s {changed.shell} {changed.name}",
                ]
            )
            + "\n"
        )


# The no-op floor: a Python process that reads the three account files and does nothing else.
FLOOR_READ = 'for p in ("/etc/passwd", "/etc/group", "/etc/shadow"): open(p).read()'
