"""The undo layer's bookkeeping: what a change records, and when an undo entry settles."""

from __future__ import annotations

from jcstate import undo
from jcstate.ledger import Ledger, UserRecord
from jcstate.plan import Change, FieldChange, Plan


def test_a_change_records_only_what_it_did() -> None:
    ledger = Ledger("/ledger.json")
    created = Change(
        "users",
        "dana",
        "create",
        20,
        fields=[FieldChange("groups", [], ["dev"]), FieldChange("admin", False, True)],
    )
    assert undo.record(ledger, created, {"dana": "delete"})
    assert ledger.users["dana"].to_dict() == {
        "created": True,
        "onRemoval": "delete",
        "groups": ["dev"],
        "adminBefore": False,
    }
    # an existing user that was in "ops" already: only "dev" is jcstate's
    joined = Change(
        "users", "alice", "update", 30, fields=[FieldChange("groups", ["ops"], ["dev", "ops"])]
    )
    undo.record(ledger, joined, {})
    assert ledger.users["alice"].groups == {"dev"} and not ledger.users["alice"].created
    # admin put back to what it was: nothing of it is jcstate's any more
    demoted = Change("users", "dana", "update", 30, fields=[FieldChange("admin", True, False)])
    undo.record(ledger, demoted, {})
    assert ledger.users["dana"].admin_before is None
    # a policy's state: absent removes the account and the entry with it
    assert undo.record(ledger, Change("users", "dana", "remove", 20), {})
    assert "dana" not in ledger.users
    # a changed field that is not about ownership records nothing
    shell = Change(
        "users", "bob", "update", 20, fields=[FieldChange("shell", "/bin/sh", "/bin/bash")]
    )
    assert not undo.record(ledger, shell, {})
    assert "bob" not in ledger.users


def test_mfa_changes_record_the_blocks_and_the_secret_files() -> None:
    ledger = Ledger("/ledger.json")
    undo.record(
        ledger,
        Change("sshMfa", "package:x", "create", 40, fields=[FieldChange("package", None, "x")]),
        {},
    )
    assert ledger.to_dict()["sshMfa"] == {"config": False, "totpFiles": []}
    undo.record(
        ledger,
        Change("sshMfa", "alice", "create", 41, fields=[FieldChange("totpSecret", None, "(file)")]),
        {},
    )
    undo.record(
        ledger,
        Change("sshMfa", "sshd+pam", "create", 42, fields=[FieldChange("users", [], ["alice"])]),
        {},
    )
    assert ledger.to_dict()["sshMfa"] == {"config": True, "totpFiles": ["alice"]}
    undo.record(
        ledger,
        Change("sshMfa", "sshd+pam", "remove", 42, fields=[FieldChange("users", ["alice"], [])]),
        {},
    )
    undo.record(ledger, Change("sshMfa", "alice", "remove", 41), {})
    assert ledger.to_dict()["sshMfa"] == {"config": False, "totpFiles": []}


def test_an_entry_settles_only_when_a_plan_that_read_its_resource_no_longer_needs_it() -> None:
    ledger = Ledger("/ledger.json", users={"dana": UserRecord(created=True)}, ssh_mfa_config=True)
    entries = [undo.Undo("user", "dana", retire=True), undo.Undo("sshMfa")]
    still = Plan(
        [Change("users", "dana", "update", 20, fields=[FieldChange("state", "present", "locked")])]
    )
    assert undo.settle(ledger, entries, still, {"users", "sshMfa"})
    assert not ledger.users["dana"].retired  # the lock is still planned: owed
    assert ledger.ssh_mfa_config is False  # nothing left to do for MFA: settled
    ledger.ssh_mfa_config = True
    undo.settle(ledger, entries, Plan(), {"users"})  # sshMfa's facts could not be read
    assert ledger.users["dana"].retired and ledger.ssh_mfa_config is True
