"""Client addresses: X-Forwarded-For/-Proto count only from a --trusted-proxy peer, and the
audit log records the address that decision gives (jcstate.server.peer)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import live
import pytest

from jcstate.agent import signing
from jcstate.agent.identity import Identity
from jcstate.errors import JcstateError
from jcstate.server.peer import TrustedProxies, client_address


def scope(peer: str, **headers: str) -> dict:
    return {
        "type": "http",
        "client": (peer, 50000),
        "scheme": "http",
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }


def test_forwarded_headers_from_an_untrusted_peer_are_ignored():
    trusted = TrustedProxies(["10.0.0.0/8"])
    s = scope("192.0.2.7", x_forwarded_for="203.0.113.9", x_forwarded_proto="https")
    assert client_address(s, trusted) == ("192.0.2.7", "http")
    # and with no trusted proxy at all
    assert client_address(s, TrustedProxies()) == ("192.0.2.7", "http")


def test_a_trusted_proxy_names_the_client_and_the_scheme():
    trusted = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    s = scope("10.1.2.3", x_forwarded_for="203.0.113.9", x_forwarded_proto="https")
    assert client_address(s, trusted) == ("203.0.113.9", "https")


def test_what_a_client_writes_at_the_left_of_the_header_cannot_win():
    # the client sent "X-Forwarded-For: 127.0.0.1"; nginx appended the real address
    trusted = TrustedProxies(["10.0.0.0/8"])
    s = scope("10.1.2.3", x_forwarded_for="127.0.0.1, 198.51.100.4")
    assert client_address(s, trusted)[0] == "198.51.100.4"
    # a chain of trusted proxies is walked through to the first untrusted address
    s = scope("10.1.2.3", x_forwarded_for="198.51.100.4, 10.9.9.9")
    assert client_address(s, trusted)[0] == "198.51.100.4"
    # garbage stops the walk at the last readable address
    s = scope("10.1.2.3", x_forwarded_for="<script>, 10.9.9.9")
    assert client_address(s, trusted)[0] == "10.9.9.9"
    s = scope("10.1.2.3", x_forwarded_proto="gopher")
    assert client_address(s, trusted) == ("10.1.2.3", "http")


def test_a_bad_cidr_is_refused_with_what_to_give():
    with pytest.raises(JcstateError, match="--trusted-proxy 'ten/8'.*10.0.0.0/8"):
        TrustedProxies(["ten/8"])


def _denied_addresses(srv: live.LiveServer) -> list[str | None]:
    rows = srv.ctx.store.list_audit(50)
    return [r["detail"].get("address") for r in rows if r["outcome"] == "denied"]


SPOOF = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def test_the_audit_log_sees_the_real_peer_when_headers_are_spoofed(tmp_path: Path):
    # the proxy is trusted only in 10.0.0.0/8; this test's requests come from 127.0.0.1
    with live.live_server(
        f"sqlite:///{tmp_path}/j.db", str(tmp_path), trusted_proxies=("10.0.0.0/8",)
    ) as srv:
        identity = Identity(str(tmp_path / "dev"))
        body = json.dumps(
            {
                "connectKey": "not-the-key",
                "publicKey": identity.public_key_b64,
                "hostname": "spoofer",
                "os": "linux",
            }
        ).encode()
        signed = signing.sign_headers(identity.private_key, "POST", "/api/v1/enroll", body, "")
        with httpx.Client(base_url=srv.url) as http:
            bad = {"Authorization": "Bearer not-a-token", **SPOOF}
            assert http.get("/api/v1/devices", headers=bad).status_code == 401
            headers = {**signed, "Content-Type": "application/json", **SPOOF}
            assert http.post("/api/v1/enroll", content=body, headers=headers).status_code == 403
        assert _denied_addresses(srv) == ["127.0.0.1", "127.0.0.1"]
        # a device enrolling for real is audited with its address too
        _, device_id = srv.device("dev1")
        enrolled = [r for r in srv.ctx.store.list_audit(50) if r["target"] == device_id]
        assert enrolled[0]["detail"]["address"] == "127.0.0.1"


def test_a_trusted_proxy_passes_the_client_address_to_the_audit_log(tmp_path: Path):
    with live.live_server(
        f"sqlite:///{tmp_path}/j.db", str(tmp_path), trusted_proxies=("127.0.0.0/8",)
    ) as srv:
        with httpx.Client(base_url=srv.url) as http:
            bad = {"Authorization": "Bearer not-a-token", **SPOOF}
            assert http.get("/api/v1/devices", headers=bad).status_code == 401
            forged = {"Authorization": "Bearer x", "X-Forwarded-For": "1.2.3.4, 198.51.100.4"}
            assert http.get("/api/v1/devices", headers=forged).status_code == 401
        assert _denied_addresses(srv) == ["198.51.100.4", "203.0.113.9"]
