"""The four libsodium calls the agent makes, through PyNaCl's compiled binding.

``nacl.signing`` (with ``nacl.bindings``, every binding module of PyNaCl, and ``typing``) costs
the resident agent about 1.6 MB; the compiled module underneath, ``nacl._sodium``, about
0.6 MB. The agent needs four of its functions: an Ed25519 key pair from a seed, a signature,
its check (signed releases), and SHA-256. They are called here exactly as ``nacl.bindings``
calls them (the same buffer sizes, asked of the library); ``tests/agent/test_agent_identity.py``
checks every result against ``nacl.signing`` and ``nacl.bindings``. ``nacl._sodium`` is
PyNaCl's own module, not a public API: a PyNaCl that drops it fails those tests, and this
module is the one place to adapt.
"""

from __future__ import annotations

__all__ = ["seed_keypair", "sha256", "sign", "verify"]

_lib = None  # nacl._sodium's (ffi, lib), loaded and initialised on first use


def _sodium():  # type: ignore[no-untyped-def]
    global _lib
    if _lib is None:
        from nacl._sodium import ffi, lib

        if lib.sodium_init() == -1:  # 0: initialised now, 1: already (nacl.bindings did)
            raise RuntimeError("libsodium could not be initialised")
        _lib = ffi, lib
    return _lib


def seed_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) of the Ed25519 key pair made from a 32-byte ``seed``."""
    ffi, lib = _sodium()
    if len(seed) != lib.crypto_sign_secretkeybytes() // 2:
        raise ValueError("an Ed25519 seed has 32 bytes")
    public = ffi.new("unsigned char[]", lib.crypto_sign_publickeybytes())
    secret = ffi.new("unsigned char[]", lib.crypto_sign_secretkeybytes())
    if lib.crypto_sign_seed_keypair(public, secret, seed) != 0:
        raise RuntimeError("libsodium could not make the key pair")
    return ffi.buffer(public)[:], ffi.buffer(secret)[:]


def sign(message: bytes, secret: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` with the 64-byte ``secret`` key."""
    ffi, lib = _sodium()
    if len(secret) != lib.crypto_sign_secretkeybytes():
        raise ValueError("an Ed25519 secret key has 64 bytes")
    size = lib.crypto_sign_bytes()
    signed = ffi.new("unsigned char[]", len(message) + size)
    signed_len = ffi.new("unsigned long long *")
    if lib.crypto_sign(signed, signed_len, message, len(message), secret) != 0:
        raise RuntimeError("libsodium could not sign")
    return ffi.buffer(signed, size)[:]  # crypto_sign writes the signature, then the message


def verify(signature: bytes, message: bytes, public: bytes) -> bool:
    """True when ``signature`` (64 bytes) is ``public``'s Ed25519 signature of ``message``."""
    ffi, lib = _sodium()
    if len(signature) != lib.crypto_sign_bytes() or len(public) != lib.crypto_sign_publickeybytes():
        return False
    signed = signature + message  # crypto_sign_open takes them joined, as crypto_sign writes
    opened = ffi.new("unsigned char[]", len(signed))
    opened_len = ffi.new("unsigned long long *")
    return lib.crypto_sign_open(opened, opened_len, signed, len(signed), public) == 0


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of ``data``."""
    ffi, lib = _sodium()
    digest = ffi.new("unsigned char[]", lib.crypto_hash_sha256_bytes())
    if lib.crypto_hash_sha256(digest, data, len(data)) != 0:
        raise RuntimeError("libsodium could not hash")
    return ffi.buffer(digest)[:]
