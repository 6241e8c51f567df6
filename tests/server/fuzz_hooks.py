"""Schemathesis hooks for ``tests/server/test_fuzz.py``: sign every request as a real device.

Loaded by the schemathesis command (``SCHEMATHESIS_HOOKS=fuzz_hooks``) when
``JCSTATE_FUZZ_DEVICE`` names the state directory of a device the test enrolled. The signature
is made over the request exactly as it goes out (method, path with query, body bytes), with the
agent's own signing code, so the signed device routes are fuzzed past authentication.
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis

from jcstate.agent import signing
from jcstate.agent.identity import Identity


class DeviceSigner(requests.auth.AuthBase):
    """Signs a prepared request with the device's key, as the agent's client does."""

    def __init__(self, state_dir: str):
        self.identity = Identity(state_dir)
        device = self.identity.device()
        assert device is not None, f"{state_dir}: no enrolled device"
        self.device_id = device["id"]

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = signing.sign_headers(
            self.identity.private_key,
            request.method or "GET",
            request.path_url,
            body,
            self.device_id,
        )
        request.headers.update(headers)
        return request


_STATE = os.environ.get("JCSTATE_FUZZ_DEVICE")
_SIGNER = DeviceSigner(_STATE) if _STATE else None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if _SIGNER is not None:
        kwargs["auth"] = _SIGNER
