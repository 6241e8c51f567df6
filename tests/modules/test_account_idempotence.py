"""Property: for generated current systems and desired states, planning, applying the plan to a
simulated system (shadow_sim) and planning again gives no changes."""

from __future__ import annotations

from typing import Any

from account_cases import facts_from
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shadow_sim import System, _Group, _Node, _User

from jcstate.host import Host
from jcstate.modules.groups import parse as parse_groups
from jcstate.modules.groups.linux import BACKEND as GROUPS
from jcstate.modules.users import parse as parse_users
from jcstate.modules.users.linux import BACKEND as USERS
from jcstate.plan import Change, Plan
from jcstate.resource import PlanContext

NAMES = st.from_regex(r"[a-z_][a-z0-9_-]{0,6}", fullmatch=True).filter(
    lambda n: n not in ("root", "sudo", "users")
)
HASHES = ["$6$a$firstHash", "$6$b$secondHash"]
SHELLS = ["/bin/sh", "/bin/bash", "/usr/sbin/nologin"]
KEYS = ["ssh-ed25519 AAAAkey1 a@x", "ssh-rsa AAAAkey2 b@y"]


@st.composite
def systems(draw: Any) -> System:
    """A current system: root (an admin, so lock-out safety stays out of the way), sudo, users."""
    sys_ = System()
    sys_.users["root"] = _User(0, 0, "root", "/root", "/bin/bash", "$6$r$rootHash")
    sys_.groups.update(root=_Group(0), sudo=_Group(27), users=_Group(100))
    names = draw(st.lists(NAMES, unique=True, max_size=4))
    uids = draw(
        st.lists(st.integers(1000, 1012), unique=True, min_size=len(names), max_size=len(names))
    )
    for name, uid in zip(names, uids, strict=True):
        gid = uid if name not in sys_.groups else 100
        if name not in sys_.groups and all(g.gid != uid for g in sys_.groups.values()):
            sys_.groups[name] = _Group(uid)
        else:
            gid = 100
        home = f"/home/{name}"
        sys_.users[name] = _User(
            uid,
            gid,
            draw(st.sampled_from(["", "Someone", "Some One,,,"])),
            home,
            draw(st.sampled_from(SHELLS)),
            draw(st.sampled_from(["!", "*", HASHES[0], "!" + HASHES[0]])),
            draw(st.sampled_from([None, None, 1, 20999])),
        )
        if draw(st.booleans()):
            sys_.nodes[home] = _Node(0o755, uid, gid)
            if draw(st.booleans()):
                sys_.nodes[home + "/.ssh"] = _Node(draw(st.sampled_from([0o700, 0o755])), uid, gid)
                sys_.nodes[home + "/.ssh/authorized_keys"] = _Node(
                    draw(st.sampled_from([0o600, 0o644])),
                    uid,
                    gid,
                    text="".join(k + "\n" for k in draw(st.lists(st.sampled_from(KEYS)))),
                )
    for gname in draw(st.lists(NAMES, unique=True, max_size=3)):
        if gname not in sys_.groups:
            members = draw(st.lists(st.sampled_from(["root", *names]), unique=True))
            sys_.groups[gname] = _Group(2000 + len(sys_.groups), members)
    for name in names:
        if draw(st.booleans()):
            sys_.groups["sudo"].members.append(name)
    return sys_


def _opt(strategy: Any) -> Any:
    return st.one_of(st.none(), strategy)


@st.composite
def documents(draw: Any, sys_: System) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    existing = [n for n in sys_.users if n != "root"]
    pool = st.one_of(NAMES, st.sampled_from(existing)) if existing else NAMES
    user_names = draw(st.lists(pool, unique=True, max_size=4))
    group_pool = st.one_of(
        NAMES,
        st.sampled_from([g for g in sys_.groups if g not in ("root", "sudo", "users")] or ["devs"]),
    )
    group_names = draw(st.lists(group_pool, unique=True, max_size=3))
    member_pool = st.sampled_from(sorted(set(existing) | set(user_names)) or ["root"])
    groups = []
    for name in group_names:
        entry: dict[str, Any] = {
            "name": name,
            "state": draw(st.sampled_from(["present", "present", "absent"])),
        }
        if (gid := draw(_opt(st.integers(2000, 2006)))) is not None:
            entry["gid"] = gid
        if (members := draw(_opt(st.lists(member_pool, unique=True, max_size=3)))) is not None:
            entry["members"] = members
        groups.append(entry)
    group_choice = st.sampled_from(sorted({*group_names, *sys_.groups} - {"root"}))
    users = []
    for name in user_names:
        entry = {
            "name": name,
            "state": draw(st.sampled_from(["present", "present", "locked", "absent"])),
        }
        fields = {
            "uid": _opt(st.integers(1000, 1012)),
            "fullName": _opt(st.sampled_from(["Someone", "Other Person"])),
            "shell": _opt(st.sampled_from(SHELLS)),
            "home": _opt(st.sampled_from([f"/home/{name}", f"/srv/{name}"])),
            "primaryGroup": _opt(group_choice),
            "groups": _opt(st.lists(group_choice, unique=True, max_size=2)),
            "admin": _opt(st.booleans()),
            "password": _opt(st.sampled_from(HASHES).map(lambda h: {"hash": h})),
            "sshAuthorizedKeys": _opt(st.lists(st.sampled_from(KEYS), unique=True)),
            "expires": _opt(st.sampled_from(["2027-06-30", "2031-01-01"])),
            "removeHome": _opt(st.booleans()),
        }
        for key, strategy in fields.items():
            if (value := draw(strategy)) is not None:
                entry[key] = value
        users.append(entry)
    return users, groups


def _plan(sys_: System, users: list[Any], groups: list[Any]) -> list[Change]:
    facts = sys_.facts(facts_from)
    ctx = PlanContext(host=Host(root="/", os_name="linux"))
    ctx.facts = {"users": facts, "groups": facts}
    ctx.desired = {"users": parse_users(users), "groups": parse_groups(groups)}
    return GROUPS.plan(ctx.desired["groups"], ctx) + USERS.plan(ctx.desired["users"], ctx)


def _consistent(users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> bool:
    """What validation guarantees: a user's groups never contradict authoritative members."""
    members = {g["name"]: set(g["members"]) for g in groups if "members" in g}
    return all(
        u["name"] in members[g]
        for u in users
        if u["state"] != "absent"
        for g in u.get("groups", [])
        if g in members
    )


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(st.data())
def test_plan_apply_plan_is_empty(data: Any) -> None:
    sys_ = data.draw(systems())
    users, groups = data.draw(documents(sys_))
    assume(_consistent(users, groups))
    first = _plan(sys_, users, groups)
    assume(not any(c.error for c in first))
    for change in Plan(first).ordered():
        for step in change.steps:
            sys_.apply(step)
    second = _plan(sys_, users, groups)
    assert [c.to_dict() for c in second] == []
