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
import hashlib
import secrets
import time

__all__ = [
    "DATE",
    "DEVICE",
    "MAX_SKEW",
    "NONCE",
    "SIGNATURE",
    "canonical",
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
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(
        ["jcstate-v1", method.upper(), target, digest, date, nonce, device_id]
    ).encode()


def sign_headers(
    private_key, method: str, target: str, body: bytes, device_id: str
) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Headers that authenticate one request; ``private_key`` is an Ed25519PrivateKey."""
    date = str(int(time.time()))
    nonce = secrets.token_hex(16)
    sig = private_key.sign(canonical(method, target, body, date, nonce, device_id))
    return {
        DEVICE: device_id,
        DATE: date,
        NONCE: nonce,
        SIGNATURE: base64.b64encode(sig).decode(),
    }


def verify(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    """True when ``signature_b64`` is the device key's signature over ``message``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
