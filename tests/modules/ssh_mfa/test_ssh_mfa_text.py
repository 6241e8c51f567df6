"""The pure parts of sshMfa: PAM and sshd text edits, effective-setting checks, secret files."""

from __future__ import annotations

from pathlib import Path

import pytest

from jcstate.errors import HostError, PlanError, SecretError
from jcstate.modules.ssh_mfa import pam, parse, sshd, totp_file
from jcstate.secret import Secret

DEBIAN = Path(__file__).parent / "roots" / "debian12" / "etc"
PAM_TEXT = (DEBIAN / "pam.d" / "sshd").read_text()
SSHD_TEXT = (DEBIAN / "ssh" / "sshd_config").read_text()


def test_pam_block_goes_right_after_the_password_step_and_comes_out_byte_for_byte() -> None:
    edited = pam.set_block(PAM_TEXT, ("alice", "bob"))
    lines = edited.splitlines()
    at = lines.index("@include common-auth")
    assert lines[at + 2] == (
        "auth [success=1 default=ignore] pam_succeed_if.so user notin alice:bob quiet"
    )
    assert lines[at + 3] == "auth required pam_google_authenticator.so"
    assert "nullok" not in edited
    assert pam.block_users(edited) == ("alice", "bob")
    assert pam.set_block(edited, ("alice",)).count(pam.BEGIN) == 1
    assert pam.set_block(edited, ()) == PAM_TEXT


def test_pam_block_without_common_auth_follows_the_last_auth_line() -> None:
    text = (
        "auth required pam_env.so\nauth substack password-auth\naccount required pam_nologin.so\n"
    )
    lines = pam.set_block(text, ("alice",)).splitlines()
    assert lines[1] == "auth substack password-auth" and lines[2].startswith(pam.BEGIN)


def test_pam_without_auth_or_with_damaged_markers_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="no 'auth' step"):
        pam.set_block("account required pam_nologin.so\n", ("alice",))
    with pytest.raises(PlanError, match="markers are damaged"):
        pam.set_block(PAM_TEXT + pam.BEGIN + "\n", ("alice",))


def test_pam_check_refuses_missing_modules_includes_and_nullok() -> None:
    good = pam.set_block(PAM_TEXT, ("alice",))
    yes = lambda name: True  # noqa: E731
    pam.check_stack(good, ("alice",), yes, yes)
    with pytest.raises(HostError, match="not installed: pam_google_authenticator.so"):
        pam.check_stack(good, ("alice",), lambda m: m != pam.MODULE, yes)
    with pytest.raises(HostError, match="included file is missing"):
        pam.check_stack(good, ("alice",), yes, lambda name: name != "common-auth")
    with pytest.raises(HostError, match="nullok"):
        pam.check_stack(
            good.replace("authenticator.so\n", "authenticator.so nullok\n"), ("alice",), yes, yes
        )
    with pytest.raises(HostError, match="expected the TOTP rule"):
        pam.check_stack(good, ("alice", "bob"), yes, yes)


def test_dropin_path_follows_a_global_include_only() -> None:
    assert sshd.dropin_path(SSHD_TEXT) == "/etc/ssh/sshd_config.d/00-jcstate-mfa.conf"
    assert sshd.dropin_path("Include conf.d/*\n") == "/etc/ssh/conf.d/00-jcstate-mfa.conf"
    assert sshd.dropin_path("Port 22\n") is None
    assert sshd.dropin_path("Match User x\n  Include /etc/ssh/sshd_config.d/*.conf\n") is None
    assert sshd.dropin_path("Include /etc/ssh/sshd_config.d/*.local\n") is None


def test_sshd_block_sits_at_the_end_and_is_removed_exactly() -> None:
    edited = sshd.set_block(SSHD_TEXT, ("alice",))
    assert edited.startswith(SSHD_TEXT)
    assert sshd.managed_users(edited) == ("alice",)
    assert sshd.set_block(edited, ()) == SSHD_TEXT
    assert sshd.managed_users(sshd.render_dropin(("alice", "bob"))) == ("alice", "bob")
    assert sshd.render_dropin(()) is None


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {
                "usepam": "yes",
                "kbdinteractiveauthentication": "yes",
                "authenticationmethods": "keyboard-interactive",
            },
            None,
        ),
        (
            {
                "usepam": "yes",
                "kbdinteractiveauthentication": "yes",
                "authenticationmethods": "publickey,keyboard-interactive:pam",
            },
            None,
        ),
        (
            {
                "usepam": "no",
                "kbdinteractiveauthentication": "yes",
                "authenticationmethods": "keyboard-interactive",
            },
            "UsePAM",
        ),
        (
            {
                "usepam": "yes",
                "kbdinteractiveauthentication": "no",
                "authenticationmethods": "keyboard-interactive",
            },
            "KbdInteractive",
        ),
        (
            {
                "usepam": "yes",
                "kbdinteractiveauthentication": "yes",
                "authenticationmethods": "any",
            },
            "without the code",
        ),
        (
            {
                "usepam": "yes",
                "kbdinteractiveauthentication": "yes",
                "authenticationmethods": "publickey keyboard-interactive",
            },
            "without the code",
        ),
    ],
)
def test_effective_settings_must_force_the_code(settings: dict, problem: str | None) -> None:
    found = sshd.check_effective("alice", settings)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_parse_effective_reads_sshd_T_output() -> None:
    out = "port 22\nusepam yes\nAuthenticationMethods keyboard-interactive\n"
    assert sshd.parse_effective(out)["authenticationmethods"] == "keyboard-interactive"


def test_secret_file_content_and_validation() -> None:
    content = totp_file.render(Secret("jbsw y3dp ehpk 3pxp"))
    assert str(content) == "(secret)"
    lines = content.reveal().splitlines()
    assert lines == ["JBSWY3DPEHPK3PXP", '" TOTP_AUTH', totp_file.MARKER]
    assert totp_file.is_managed(content.reveal().encode())
    assert not totp_file.is_managed(b'JBSWY3DPEHPK3PXP\n" TOTP_AUTH\n')
    with pytest.raises(SecretError) as err:
        totp_file.normalise(Secret("short-and-wrong!"))
    assert "short-and-wrong" not in str(err.value)


def test_model_parse_sorts_and_rejects_bad_input() -> None:
    model = parse({"enabled": True, "users": ["bob", "alice", "bob"]})
    assert model.users == ("alice", "bob") and model.mfa_users == ("alice", "bob")
    assert parse({"enabled": False, "users": ["alice"]}).mfa_users == ()
    for bad in (
        {"users": ["alice"]},
        {"enabled": True, "users": ["al:ice"]},
        {"enabled": True, "users": ["a b"]},
        {"enabled": True, "extra": 1},
        {"enabled": "yes"},
        ["alice"],
    ):
        with pytest.raises(PlanError):
            parse(bad)
