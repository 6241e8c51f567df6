"""The blast radius's undo lines, from the ledger names a device reported with its facts."""

from __future__ import annotations

from jcstate.server.blast import account_changes, undo_changes

LEDGER = {
    "users": {
        "erin": {"created": True, "onRemoval": "lock", "groups": ["dev"], "admin": True},
        "gus": {"created": True, "onRemoval": "delete", "groups": ["dev"], "admin": False},
        "kim": {"created": True, "onRemoval": "keep", "groups": [], "admin": False},
        "alice": {"created": False, "onRemoval": "lock", "groups": ["dev"], "admin": False},
        "old": {"created": True, "onRemoval": "lock", "groups": [], "retired": True},
    },
    "sshMfa": True,
    "totpFiles": ["alice"],
    "fileVaultUsers": [],
}


def test_users_that_leave_every_policy_follow_their_on_removal() -> None:
    lines = undo_changes({"users": [{"name": "alice"}]}, {"ledger": LEDGER})
    assert lines == [
        "~ user alice: groups - dev (no longer in any policy)",
        "~ user erin (no longer in any policy): locked",
        "~ user erin: groups - dev (no longer in any policy)",
        "~ user erin: admin restored (no longer in any policy)",
        "- user gus (no longer in any policy)",
        "- sshMfa sshd+pam (no longer in any policy)",
        "- sshMfa alice (TOTP file) (no longer in any policy)",
    ]


def test_nothing_to_undo_while_the_policies_still_want_it() -> None:
    spec = {
        "users": [
            {"name": "alice", "groups": ["dev"]},
            {"name": "erin", "groups": ["dev"], "admin": True},
            {"name": "gus"},
            {"name": "kim"},
        ],
        "groups": [{"name": "dev", "members": ["gus"]}],
        "sshMfa": {"enabled": True, "users": ["alice"]},
    }
    assert undo_changes(spec, {"ledger": LEDGER}) == []


def test_no_ledger_reported_means_no_undo_lines() -> None:
    facts = {"users": {"users": [{"name": "alice", "uid": 1000}]}}
    assert account_changes({"users": [{"name": "alice"}]}, facts) == []
    assert undo_changes({}, {"ledger": {"error": "damaged"}}) == []
