"""The device key: PyNaCl signs, ``key.pem`` stays the PKCS#8 PEM cryptography reads and writes.

State directories made before the agent signed with PyNaCl keep working (their key loads and
its signatures verify on the server, which verifies with cryptography), a key the agent makes
now loads in cryptography, and anything but an unencrypted PKCS#8 Ed25519 key is refused with
a clear error.
"""

from __future__ import annotations

import base64
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey

from jcstate.agent import signing
from jcstate.agent.identity import DeviceKey, Identity
from jcstate.errors import JcstateError


def _pem(key: object, encryption: object = None) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _verifies(public: bytes, headers: dict[str, str], method: str, target: str, body: bytes):
    message = signing.canonical(
        method,
        target,
        body,
        headers[signing.DATE],
        headers[signing.NONCE],
        headers[signing.DEVICE],
    )
    return signing.verify(base64.b64encode(public).decode(), headers[signing.SIGNATURE], message)


def test_a_key_made_by_cryptography_keeps_working(tmp_path):
    old = Ed25519PrivateKey.generate()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "key.pem").write_bytes(_pem(old))
    os.chmod(state / "key.pem", 0o600)
    identity = Identity(str(state))
    assert base64.b64decode(identity.public_key_b64) == _raw_public(old)
    headers = signing.sign_headers(identity.private_key, "POST", "/api/v1/x?a=1", b"{}", "dev1")
    assert _verifies(_raw_public(old), headers, "POST", "/api/v1/x?a=1", b"{}")
    assert not _verifies(_raw_public(old), headers, "POST", "/api/v1/x?a=1", b"{ }")
    # the same bytes come back out
    assert identity.private_key.to_pem() == _pem(old)


def test_a_key_made_by_the_agent_is_pkcs8_that_cryptography_reads(tmp_path):
    identity = Identity(str(tmp_path / "state"))
    public = base64.b64decode(identity.public_key_b64)
    path = tmp_path / "state" / "key.pem"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey) and _raw_public(loaded) == public
    # the signature is the one cryptography makes (Ed25519 is deterministic)
    assert identity.private_key.sign(b"message") == loaded.sign(b"message")
    again = Identity(str(tmp_path / "state"))  # a restart reads the same key
    assert again.public_key_b64 == identity.public_key_b64


def test_sign_headers_takes_every_kind_of_ed25519_key():
    nacl_key = SigningKey.generate()
    crypto_key = Ed25519PrivateKey.generate()
    device_key = DeviceKey.generate()
    for key, public in [
        (nacl_key, bytes(nacl_key.verify_key)),
        (crypto_key, _raw_public(crypto_key)),
        (device_key, device_key.public_bytes()),
    ]:
        headers = signing.sign_headers(key, "GET", "/api/v1/device", b"", "dev")
        assert len(base64.b64decode(headers[signing.SIGNATURE])) == 64
        assert _verifies(public, headers, "GET", "/api/v1/device", b"")


def test_the_key_never_prints_its_secret():
    key = DeviceKey.generate()
    seed = key.to_pem().split(b"\n")[1].decode()
    assert seed not in repr(key) and "DeviceKey" in repr(key)


@pytest.mark.parametrize(
    ("pem", "error"),
    [
        (b"", "not a PEM private key"),
        (b"\xff\xfe", "not a PEM private key"),
        (
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            "not a PEM private key",
        ),
        (
            b"-----BEGIN PRIVATE KEY-----\n@@not base64@@\n-----END PRIVATE KEY-----\n",
            "not valid base64",
        ),
        (_pem(ec.generate_private_key(ec.SECP256R1())), "not an unencrypted PKCS#8 Ed25519 key"),
        (
            # a 48-byte structure whose algorithm is Ed448's OID (1.3.101.113), not Ed25519's
            b"-----BEGIN PRIVATE KEY-----\n"
            + base64.b64encode(bytes.fromhex("302e020100300506032b657104220420") + bytes(32))
            + b"\n-----END PRIVATE KEY-----\n",
            "not an unencrypted PKCS#8 Ed25519 key",
        ),
        (
            # PKCS#8 v2 (with the public key), which the agent never wrote
            b"-----BEGIN PRIVATE KEY-----\n"
            + base64.b64encode(
                bytes.fromhex("3051020101300506032b657004220420")
                + bytes(32)
                + bytes.fromhex("812100")
                + bytes(32)
            )
            + b"\n-----END PRIVATE KEY-----\n",
            "not an unencrypted PKCS#8 Ed25519 key",
        ),
    ],
    ids=["empty", "binary", "ec-pem-label", "bad-base64", "ec-key", "ed448-oid", "pkcs8-v2"],
)
def test_anything_else_is_refused_clearly(tmp_path, pem, error):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "key.pem").write_bytes(pem)
    os.chmod(state / "key.pem", 0o600)
    with pytest.raises(JcstateError, match=error) as caught:
        _ = Identity(str(state)).private_key
    assert str(state / "key.pem") in str(caught.value)


def test_an_encrypted_key_is_refused(tmp_path):
    key = Ed25519PrivateKey.generate()
    pem = _pem(key, serialization.BestAvailableEncryption(b"passphrase"))
    with pytest.raises(JcstateError, match="not a PEM private key"):
        DeviceKey.from_pem(pem)  # ENCRYPTED PRIVATE KEY: another label


def test_a_key_readable_by_others_is_refused(tmp_path):
    identity = Identity(str(tmp_path / "state"))
    assert identity.public_key_b64  # the key is made and saved
    os.chmod(identity.key_path, 0o640)
    with pytest.raises(JcstateError, match="readable by others"):
        _ = Identity(str(tmp_path / "state")).private_key


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), os.urandom(32), b"\xff" * 32])
def test_libsodium_through_nacl_sodium_gives_what_nacl_signing_gives(seed):
    """jcstate.agent.sodium calls PyNaCl's compiled module directly (nacl.signing costs the
    resident agent 1.6 MB): same public key, same signatures, same digest as the public API."""
    from nacl.bindings import crypto_hash_sha256

    from jcstate.agent import sodium

    reference = SigningKey(seed)
    key = DeviceKey(seed)
    assert key.public_bytes() == bytes(reference.verify_key)
    for message in (b"", b"jcstate-v1\nGET\n/x", os.urandom(5000)):
        assert key.sign(message) == reference.sign(message).signature
        assert sodium.sha256(message) == crypto_hash_sha256(message)
        # the check of a signature (signed releases) agrees with nacl's verify key
        signature = reference.sign(message).signature
        assert sodium.verify(signature, message, bytes(reference.verify_key))
        assert not sodium.verify(signature, message + b"x", bytes(reference.verify_key))
        forged = bytes([signature[0] ^ 1]) + signature[1:]
        assert not sodium.verify(forged, message, bytes(reference.verify_key))
        assert not sodium.verify(signature[:-1], message, bytes(reference.verify_key))
    assert DeviceKey.from_pem(key.to_pem()).public_bytes() == key.public_bytes()
    with pytest.raises(ValueError):
        sodium.sign(b"x", seed)  # a seed is not a secret key: refused, never read past its end
