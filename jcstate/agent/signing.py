"""How a device signs a request, and how the server checks it.

The signed message binds the method, the path with its query, a digest of the body, the date and
a single-use nonce, so a captured request cannot be replayed, moved to another path or given
another body. The server keeps only the device's public key. ::

    jcstate-v1
    POST
    /api/v1/device/reports?x=1
    <sha256 of the body, hex>
    <unix seconds>
    <nonce>
    <device id, empty while enrolling>
"""

from __future__ import annotations

import base64
import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DATE",
    "DEVICE",
    "MAX_SKEW",
    "NONCE",
    "SIGNATURE",
    "canonical",
    "message_for",
    "sign_headers",
    "verify",
]

DEVICE = "X-Jcstate-Device"
DATE = "X-Jcstate-Date"
NONCE = "X-Jcstate-Nonce"
SIGNATURE = "X-Jcstate-Signature"
MAX_SKEW = 300  # seconds a request's date may differ from the server's clock


def canonical(
    method: str, target: str, body: bytes, date: str, nonce: str, device_id: str
) -> bytes:
    return message_for(method, target, _sodium_sha256(body), date, nonce, device_id)


def message_for(
    method: str, target: str, body_digest: str, date: str, nonce: str, device_id: str
) -> bytes:
    """The signed message, given the body's SHA-256 in hex (the server uses hashlib)."""
    return "\n".join(
        ["jcstate-v1", method.upper(), target, body_digest, date, nonce, device_id]
    ).encode()


def _sodium_sha256(body: bytes) -> str:
    # the agent: libsodium's SHA-256 (loaded for signing anyway) rather than hashlib, whose
    # OpenSSL binding costs the resident agent about 0.5 MB. Not for the server: cffi releases
    # the GIL on every call, and an event loop that gives it up per request waits for threads.
    from jcstate.agent import sodium

    return sodium.sha256(body).hex()


def sign_headers(
    private_key: Any, method: str, target: str, body: bytes, device_id: str
) -> dict[str, str]:
    """Headers that authenticate one request.

    ``private_key`` is the agent's :class:`~jcstate.agent.identity.DeviceKey`, or any Ed25519
    key whose ``sign(message)`` gives the signature: cryptography's ``Ed25519PrivateKey`` (the
    load benchmark's simulated devices) or PyNaCl's ``SigningKey`` (a ``SignedMessage``).
    """
    date = str(int(time.time()))
    nonce = os.urandom(16).hex()  # what secrets.token_hex does, without importing hmac
    signed = private_key.sign(canonical(method, target, body, date, nonce, device_id))
    sig = getattr(signed, "signature", signed)  # PyNaCl prepends the signature to the message
    return {
        DEVICE: device_id,
        DATE: date,
        NONCE: nonce,
        SIGNATURE: base64.b64encode(sig).decode(),
    }


def verify(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    """True when ``signature_b64`` is the device key's signature over ``message``.

    The server's side: cryptography is imported here, on first use, never by the agent.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
