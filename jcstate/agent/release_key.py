"""Signed agent releases: a release key that never lives on the server, pinned on every device.

A release is code that runs as root on every device. Checking its digest against a value that
comes from the same server only proves the server served what it meant to: whoever controls the
server would control every device. So releases are signed with an Ed25519 **release key** kept
offline (``jcstate release keygen``, ``jcstate release sign WHEEL --key K``); the server stores
and forwards the signature but cannot make one; the agent pins the release *public* key when it
is installed or enrolled (``--release-key``) and installs only a release whose signature checks
with the pinned key and whose version is newer than the one it runs (no rollback). The signed
message binds the version and the wheel's SHA-256 (the agent checks the download against that
digest), so a signature cannot be moved to other bytes or another version::

    jcstate-release-v1
    <version>
    <sha256 of the wheel, hex>

Key files are one line each: ``jcstate-release-ed25519 <base64 public key>`` for the public
key, ``jcstate-release-ed25519-private <base64 32-byte seed>`` (mode 0600) for the private one.
The agent verifies with libsodium (:mod:`jcstate.agent.sodium`), as it signs its requests.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from jcstate.errors import JcstateError

__all__ = [
    "PINNED_FILE",
    "PUBLIC_PREFIX",
    "ReleaseKeyError",
    "is_newer",
    "keygen",
    "load_private",
    "message",
    "parse_public",
    "pin",
    "pinned",
    "sign",
    "verify",
]

PUBLIC_PREFIX = "jcstate-release-ed25519"
PRIVATE_PREFIX = "jcstate-release-ed25519-private"
PINNED_FILE = "release-key.pub"  # in the agent's state directory


class ReleaseKeyError(JcstateError):
    """A release key or signature that cannot be read, or a pin that would change."""


def message(version: str, sha256: str) -> bytes:
    return f"jcstate-release-v1\n{version}\n{sha256}\n".encode()


def _b64(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ReleaseKeyError(f"{what} is not base64") from None
    if len(raw) != size:
        raise ReleaseKeyError(f"{what} has {len(raw)} bytes, not {size}")
    return raw


def parse_public(text: str) -> bytes:
    """The 32-byte public key from a ``jcstate-release-ed25519 BASE64`` line (or a file's text)."""
    words = text.split()
    if len(words) != 2 or words[0] != PUBLIC_PREFIX:
        raise ReleaseKeyError(
            f"a release public key reads '{PUBLIC_PREFIX} BASE64' (jcstate release keygen "
            "writes it to release-key.pub)"
        )
    return _b64(words[1], 32, "the release public key")


def public_line(public: bytes) -> str:
    return f"{PUBLIC_PREFIX} {base64.b64encode(public).decode()}"


def keygen() -> tuple[str, str]:
    """A new release key pair as (private file text, public file text)."""
    from jcstate.agent import sodium

    seed = os.urandom(32)
    public, _ = sodium.seed_keypair(seed)
    private = f"{PRIVATE_PREFIX} {base64.b64encode(seed).decode()}\n"
    return private, public_line(public) + "\n"


def load_private(text: str) -> bytes:
    """The 64-byte libsodium secret key from a private key file's text."""
    from jcstate.agent import sodium

    words = text.split()
    if len(words) != 2 or words[0] != PRIVATE_PREFIX:
        raise ReleaseKeyError(
            f"a release private key reads '{PRIVATE_PREFIX} BASE64' (jcstate release keygen)"
        )
    _, secret = sodium.seed_keypair(_b64(words[1], 32, "the release private key"))
    return secret


def sign(secret: bytes, version: str, sha256: str) -> str:
    """The base64 signature of a release (its version and its wheel's digest)."""
    from jcstate.agent import sodium

    return base64.b64encode(sodium.sign(message(version, sha256), secret)).decode()


def verify(public: bytes, version: str, sha256: str, signature: str) -> bool:
    """True when ``signature`` is the release key's signature of this version and digest."""
    from jcstate.agent import sodium

    try:
        raw = _b64(signature, 64, "the signature")
    except ReleaseKeyError:
        return False
    return sodium.verify(raw, message(version, sha256), public)


def pinned(state_dir: str) -> bytes | None:
    """The release public key pinned on this device, or None when none is."""
    try:
        with open(os.path.join(state_dir, PINNED_FILE), encoding="ascii") as f:
            return parse_public(f.read())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ReleaseKeyError) as exc:
        raise ReleaseKeyError(
            f"{os.path.join(state_dir, PINNED_FILE)}: cannot read the pinned release key: {exc}"
        ) from None


def pin(state_dir: str, given: str) -> bool:
    """Pin the release key ``given`` (a key line or the path of a file holding one).

    Pinning is once: the same key again changes nothing (False); a different key than the one
    pinned is refused, so nothing the server sends, and no later option, can swap it. Root on
    the device may remove the file to pin another. Returns True when it pinned now.
    """
    text = given
    if not given.lstrip().startswith(PUBLIC_PREFIX) and os.path.exists(given):
        with open(given, encoding="ascii") as f:
            text = f.read()
    key = parse_public(text)
    current = pinned(state_dir)
    if current == key:
        return False
    if current is not None:
        raise ReleaseKeyError(
            f"a different release key is pinned in {os.path.join(state_dir, PINNED_FILE)}; "
            "remove that file first to pin another (only root on the device can)"
        )
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, PINNED_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, (public_line(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


# -- versions (PEP 440 order, without importing packaging on the device) -----------------------
_VERSION = re.compile(
    r"v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|rc|alpha|beta|c|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:[-_.]?(?:post|rev|r)[-_.]?(?P<post>\d*)|-(?P<post_implicit>\d+))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d*))?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?",
    re.IGNORECASE,
)
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_INF = float("inf")


def _key(version: str) -> tuple:  # type: ignore[type-arg]
    m = _VERSION.fullmatch(version.strip())
    if m is None:
        raise ReleaseKeyError(f"{version!r} is not a PEP 440 version")
    release = [int(p) for p in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    dev = int(m["dev"] or 0) if m["dev"] is not None else None
    if m["pre"] is not None:
        pre: tuple[float, ...] = (_PRE[m["pre"].lower()], int(m["pre_n"] or 0))
    elif dev is not None and m["post"] is None and m["post_implicit"] is None:
        pre = (-_INF,)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (_INF,)
    post_text = m["post"] if m["post"] is not None else m["post_implicit"]
    post = -_INF if post_text is None else int(post_text or 0)
    return (int(m["epoch"] or 0), tuple(release), pre, post, _INF if dev is None else dev)


def is_newer(candidate: str, running: str) -> bool:
    """True when ``candidate`` sorts after ``running`` in PEP 440 order (local parts ignored)."""
    return _key(candidate) > _key(running)
