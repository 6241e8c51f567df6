"""``jcstate totp new``: secret made, stored 0600, shown as URI + QR, PNG on request."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pyotp
import pytest
import yaml

from jcstate.cli import main


def _secret_from(out: str) -> str:
    uri = next(line for line in out.splitlines() if line.startswith("otpauth://"))
    return urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]


def test_totp_new_stores_secret_0600_and_prints_uri_and_qr(tmp_path: Path, capsys) -> None:
    path = tmp_path / "secrets.yaml"
    png = tmp_path / "alice.png"
    assert main(["totp", "new", "alice", "--secrets", str(path), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    stored = yaml.safe_load(path.read_text())["totp"]["alice"]
    assert _secret_from(out) == stored and len(stored) == 32
    pyotp.TOTP(stored).now()  # a valid base32 secret
    assert "\u2588" in out or "\u2580" in out  # the terminal QR code
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert png.read_bytes().startswith(b"\x89PNG") and os.stat(png).st_mode & 0o777 == 0o600


def test_totp_new_keeps_other_secrets_and_refuses_to_replace_without_force(tmp_path, capsys):
    path = tmp_path / "secrets.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"passwords:\n  ref: x\ntotp:\n  bob: JBSWY3DPEHPK3PXP\n")
    os.close(fd)
    assert main(["totp", "new", "alice", "--secrets", str(path)]) == 0
    data = yaml.safe_load(path.read_text())
    assert data["passwords"] == {"ref": "x"} and data["totp"]["bob"] == "JBSWY3DPEHPK3PXP"
    assert main(["totp", "new", "bob", "--secrets", str(path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["totp", "new", "bob", "--secrets", str(path), "--force"]) == 0
    assert yaml.safe_load(path.read_text())["totp"]["bob"] != "JBSWY3DPEHPK3PXP"


def test_totp_new_refuses_a_secrets_file_others_can_read(tmp_path: Path, capsys) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("totp: {}\n")
    os.chmod(path, 0o644)
    assert main(["totp", "new", "alice", "--secrets", str(path)]) == 1
    assert "group or others" in capsys.readouterr().err
    assert path.read_text() == "totp: {}\n"


@pytest.mark.parametrize("name", ["al:ice", "Alice Smith", "x/../y"])
def test_totp_new_refuses_bad_user_names(tmp_path: Path, name: str) -> None:
    assert main(["totp", "new", name, "--secrets", str(tmp_path / "s.yaml")]) == 1
    assert not (tmp_path / "s.yaml").exists()
