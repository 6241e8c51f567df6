"""Did a contender really do the work? Read a host's account files and compare with the workload.

A benchmark that times a tool which silently did nothing measures nothing: every measured run
is followed by this check, for the floor and Ansible as much as for jcstate.
"""

from __future__ import annotations

from pathlib import Path

from accounts_workload import HASH, Workload

__all__ = ["account_problems"]


def _table(root: Path, name: str) -> dict[str, list[str]]:
    text = (root / "etc" / name).read_text()
    return {line.split(":", 1)[0]: line.split(":") for line in text.splitlines() if line}


def account_problems(root: Path, workload: Workload) -> list[str]:
    """Every way the host at ``root`` differs from the workload (empty: all there)."""
    passwd, group, shadow = (_table(root, n) for n in ("passwd", "group", "shadow"))
    problems: list[str] = []
    for g in workload.groups:
        entry = group.get(g.name)
        if entry is None:
            problems.append(f"group {g.name} missing")
        elif entry[2] != str(g.gid):
            problems.append(f"group {g.name}: gid {entry[2]}, want {g.gid}")
    members = {name: set(entry[3].split(",")) - {""} for name, entry in group.items()}
    for u in workload.users:
        entry = passwd.get(u.name)
        if entry is None:
            problems.append(f"user {u.name} missing")
            continue
        gecos, home, shell = entry[4], entry[5], entry[6]
        if gecos.split(",", 1)[0] != u.comment:
            problems.append(f"user {u.name}: comment {gecos!r}")
        if home != u.home or not (root / u.home.lstrip("/")).is_dir():
            problems.append(f"user {u.name}: home {home} (or its directory missing)")
        if shell != u.shell:
            problems.append(f"user {u.name}: shell {shell}, want {u.shell}")
        if shadow.get(u.name, ["", ""])[1] != HASH:
            problems.append(f"user {u.name}: password hash differs")  # never print a hash
        for g in u.groups:
            if u.name not in members.get(g, set()):
                problems.append(f"user {u.name}: not in group {g}")
    return problems
