"""A device's document: the newest revision selected, merged and rendered for it, plus secrets.

The server renders; the agent receives data, never templates. A device gets exactly the secrets
its rendered document names (users in ``sshMfa.users``, ``password.secretRef`` values), never
any other. Parsed repos are cached per revision and rendered documents per *etag*, a digest of
everything a rendering depends on: revision, secrets generation and the device's attributes.
Reported facts are a rendering input but not part of the etag, so a report never makes the
document change under the agent's feet (that would loop).

The expensive part (select, render, merge, secrets) is shared between devices whose documents
are provably identical: same revision, secrets generation, OS and matched policies, where no
template of those policies can read ``device`` or ``facts``. Such devices share one etag too (a
digest of that key), so a push that wakes 10,000 of them sends one prebuilt answer to each; other
devices' etags are per device.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from jcstate.errors import DocumentError, JcstateError, Problem
from jcstate.server.store import Store
from jcstate.server.vault import Vault

__all__ = [
    "Rendered",
    "Renderer",
    "device_of",
    "etag_for",
    "repo_from_files",
    "safe_relpath",
    "shared_etag",
]


@dataclass(frozen=True)
class Rendered:
    """What a device is sent: its document (None when no policy exists yet) and its secrets."""

    etag: str
    revision: int | None
    document: dict[str, Any] | None
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    error: str | None = None
    # revision, document, secrets and error as JSON object members, serialised once per shared
    # rendering: the work route only adds the etag and commands around it
    body: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.body:
            members = {
                "revision": self.revision,
                "document": self.document,
                "secrets": self.secrets,
                "error": self.error,
            }
            text = json.dumps(members, separators=(",", ":"))[1:-1]
            object.__setattr__(self, "body", text.encode())

    @cached_property
    def answer(self) -> bytes:
        """The whole work answer without commands, built once however many devices get it."""
        return b"".join(
            (b'{"etag":', json.dumps(self.etag).encode(), b",", self.body, b',"commands":[]}')
        )


def etag_for(revision: int | None, secrets_gen: float, device: dict[str, Any]) -> str:
    inputs = {
        "revision": revision,
        "secrets": secrets_gen,
        "device": [
            device["id"],
            device["hostname"],
            device["os"],
            device["os_version"],
            device["arch"],
            device["labels"],
        ],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=4096)  # listing 10,000 devices asks for a few keys 10,000 times
def shared_etag(key: tuple[Any, ...]) -> str:
    """The etag of a rendering shared by every device whose :meth:`Renderer._shared_key` is
    ``key``: their documents are equal, so one etag (and one answer) serves them all."""
    return "s" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:31]


def device_of(row: dict[str, Any]) -> Any:
    from jcstate.document import Device

    return Device(
        hostname=row["hostname"],
        os=row["os"],
        id=row["id"],
        osVersion=row["os_version"],
        arch=row["arch"],
        labels=dict(row["labels"] or {}),
    )


def safe_relpath(path: str) -> str:
    """A pushed file's path, refused when it could escape the temporary repo directory."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or path.startswith("/"):
        raise DocumentError(
            [Problem(path or "(empty)", 1, 1, "file path must be relative, without ..")]
        )
    return "/".join(parts)


def repo_from_files(files: dict[str, str]) -> Any:
    """Parse pushed files with the code `jcstate validate` uses; problems name the repo paths."""
    from jcstate.document import load_repo

    rel = {safe_relpath(p): text for p, text in files.items()}
    with tempfile.TemporaryDirectory(prefix="jcstate-push-") as tmp:
        paths = []
        for name, text in sorted(rel.items()):
            full = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as f:
                f.write(text)
            paths.append(full)
        prefix = tmp + os.sep
        try:
            repo = load_repo(paths)
        except DocumentError as exc:
            raise DocumentError(
                [
                    Problem(p.file.removeprefix(prefix), p.line, p.column, p.message)
                    for p in exc.problems
                ]
            ) from None
    # documents name where a resource came from: the repo's path, not this temporary copy
    for policy in repo.policies:
        policy.file = policy.file.removeprefix(prefix)
        policy.positions.file = policy.positions.file.removeprefix(prefix)
    return repo


def device_independent(policy: Any) -> bool:
    """Whether no template of ``policy`` can read ``device`` or ``facts`` (only ``vars``).

    Conservative: a template that mentions either word anywhere, reads any name but ``vars``,
    or does not parse counts as device-dependent.
    """
    from jinja2 import TemplateSyntaxError, meta, nodes

    from jcstate.document.render import is_template
    from jcstate.document.sandbox import environment

    env = environment()
    stack: list[Any] = [getattr(policy, "spec", None) or {}]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif is_template(value):
            if "device" in value or "facts" in value:
                return False
            try:
                tree = env.parse(value)
            except TemplateSyntaxError:
                return False
            if not meta.find_undeclared_variables(tree) <= {"vars"}:
                return False
            # ``self`` is not an undeclared name to Jinja2, but it reaches the whole context
            if any(node.name == "self" for node in tree.find_all(nodes.Name)):
                return False
    return True


def needed_secrets(spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(TOTP users, password refs) a rendered document needs."""
    mfa = spec.get("sshMfa") or {}
    totp_users = list(mfa.get("users") or []) if mfa.get("enabled", True) else []
    refs = []
    for user in spec.get("users") or []:
        password = user.get("password") if isinstance(user, dict) else None
        if isinstance(password, dict) and password.get("secretRef"):
            refs.append(str(password["secretRef"]))
    return totp_users, refs


class _Sharing:
    """For one parsed repo: which of its policies a device matches, when the rendering is
    shareable (every matched policy is device-independent), else None.

    A push wakes every held poll, and each needs this answer on the event loop: it is kept
    per distinct value of what the repo's selectors read (the OS always; the device id, the
    hostname and the label keys only when some selector names them), so a fleet whose policies
    select by OS costs one dict lookup per device, not a selector evaluation.
    """

    _LIMIT = 50_000  # distinct selector inputs kept (a memo of per-device ids is this big)

    def __init__(self, policies: list[Any]) -> None:
        self.policies = policies
        self.independent = tuple(device_independent(p) for p in policies)
        selectors = [p.matcher for p in policies]
        self.by_id = any(sel.devices for sel in selectors)
        self.by_hostname = any(sel.hostnames for sel in selectors)
        self.label_keys = tuple(sorted({k for sel in selectors for k in sel.labels}))
        self._memo: dict[tuple[Any, ...], tuple[int, ...] | None] = {}

    def matched(self, device: dict[str, Any]) -> tuple[int, ...] | None:
        labels = (device["labels"] or {}) if self.label_keys else {}
        key = (
            device["os"],
            device["id"] if self.by_id else None,
            device["hostname"] if self.by_hostname else None,
            tuple(labels.get(k) for k in self.label_keys),
        )
        try:
            return self._memo[key]
        except KeyError:
            pass
        target = device_of(device)
        matched = tuple(i for i, p in enumerate(self.policies) if p.matches(target))
        value = matched if all(self.independent[i] for i in matched) else None
        if len(self._memo) >= self._LIMIT:
            self._memo.clear()
        self._memo[key] = value
        return value


class Renderer:
    """Renders documents for devices, with caches shared by all requests of this process."""

    def __init__(self, store: Store, vault: Vault, cache_size: int = 20000):
        self.store = store
        self.vault = vault
        self._lock = threading.Lock()
        self._repos: OrderedDict[int, Any] = OrderedDict()
        self._rendered: OrderedDict[str, Rendered] = OrderedDict()
        self._cache_size = cache_size
        self._secretful: dict[int, bool] = {}  # id(repo) → does any policy name a secret
        # id(repo) → which policies a device matches, and can its rendering be shared
        self._sharing: dict[int, _Sharing] = {}
        # renderings shared by devices with equal documents, see _shared_key
        self._shared: OrderedDict[tuple[Any, ...], Rendered] = OrderedDict()

    def remember(self, revision: int, repo: Any) -> None:
        """Cache a repo parsed elsewhere (the push that stored it), so no device waits for it."""
        with self._lock:
            self._keep(revision, repo)

    def _keep(self, revision: int, repo: Any) -> None:
        """Cache a parsed repo, keeping the newest few (caller holds the lock)."""
        self._repos[revision] = repo
        self._repos.move_to_end(revision)
        while len(self._repos) > 3:
            _, old = self._repos.popitem(last=False)
            self._secretful.pop(id(old), None)
            self._sharing.pop(id(old), None)

    def cached(
        self, device: dict[str, Any], generation: tuple[int | None, float]
    ) -> Rendered | None:
        """The rendering when it needs no database or parsing (safe on the event loop)."""
        revision = generation[0]
        if revision is None:
            return self.for_device(device, generation)
        with self._lock:
            repo = self._repos.get(revision)
        if repo is None:
            return None
        key = self._shared_key(repo, device, generation)
        with self._lock:
            if key is not None:
                hit = self._shared.get(key)
            else:
                hit = self._rendered.get(etag_for(revision, generation[1], device))
        if hit is not None or self._needs_secrets(repo):
            return hit
        return self.for_device(device, generation)

    def etag(self, device: dict[str, Any], generation: tuple[int | None, float]) -> str:
        """The etag the device's current document has (parses the revision if needed)."""
        revision = generation[0]
        if revision is not None:
            try:
                repo = self.repo(revision)
            except JcstateError:
                pass
            else:
                key = self._shared_key(repo, device, generation)
                if key is not None:
                    return shared_etag(key)
        return etag_for(revision, generation[1], device)

    def _needs_secrets(self, repo: Any) -> bool:
        # secrets are read from the database: such repos are rendered in a worker thread
        key = id(repo)
        if key not in self._secretful:
            self._secretful[key] = any(
                needed_secrets(getattr(p, "spec", None) or {}) != ([], [])
                for p in getattr(repo, "policies", []) or []
            )
        return self._secretful[key]

    def repo(self, revision: int) -> Any:
        with self._lock:
            if revision in self._repos:
                self._repos.move_to_end(revision)
                return self._repos[revision]
            row = self.store.revision(revision)
            if row is None:
                raise JcstateError(f"revision {revision} does not exist")
            repo = repo_from_files(row["files"])
            self._keep(revision, repo)
            return repo

    def for_device(self, device: dict[str, Any], generation: tuple[int | None, float]) -> Rendered:
        revision, secrets_gen = generation
        if revision is not None:
            try:
                repo = self.repo(revision)
            except JcstateError as exc:
                return Rendered(
                    etag_for(revision, secrets_gen, device), revision, None, error=str(exc)
                )
            key = self._shared_key(repo, device, generation)
            if key is not None:
                return self._shared_rendering(repo, device, key)
        etag = etag_for(revision, secrets_gen, device)
        with self._lock:
            cached = self._rendered.get(etag)
        if cached is not None:
            return cached
        if revision is None:
            rendered = Rendered(etag, None, None)
        else:
            rendered = self._render_one(repo, device, revision, etag)
        with self._lock:
            self._rendered[etag] = rendered
            while len(self._rendered) > self._cache_size:
                self._rendered.popitem(last=False)
        return rendered

    def _shared_rendering(
        self, repo: Any, device: dict[str, Any], key: tuple[Any, ...]
    ) -> Rendered:
        """The one rendering (same etag, document and answer) of every device with ``key``."""
        with self._lock:
            shared = self._shared.get(key)
        if shared is None:
            shared = self._render_one(repo, device, key[0], shared_etag(key))
            with self._lock:
                shared = self._shared.setdefault(key, shared)
                while len(self._shared) > self._cache_size:
                    self._shared.popitem(last=False)
        return shared

    def document(self, repo: Any, device: dict[str, Any]) -> Any:
        """The rendered Document for a device row (DocumentError on a conflict)."""
        return repo.document_for(device_of(device), facts=device.get("facts") or {})

    def _shared_key(
        self, repo: Any, device: dict[str, Any], generation: tuple[int | None, float]
    ) -> tuple[Any, ...] | None:
        """The key of a rendering every device with it shares, or None (render per device).

        Selection reads the device, so the matched policies are part of the key; rendering
        reads only ``vars`` when no matched template mentions ``device`` or ``facts``, except
        that a templated name is checked against the device's OS rules, so the OS is too.
        """
        sharing = self._sharing.get(id(repo))
        if sharing is None:
            sharing = _Sharing(getattr(repo, "policies", None) or [])
            with self._lock:
                sharing = self._sharing.setdefault(id(repo), sharing)
        matched = sharing.matched(device)
        if matched is None:
            return None
        return (generation[0], generation[1], device["os"], matched)

    def _render_one(self, repo: Any, device: dict[str, Any], revision: int, etag: str) -> Rendered:
        try:
            doc = self.document(repo, device)
        except JcstateError as exc:
            return Rendered(etag, revision, None, error=str(exc))
        data = doc.to_dict()
        totp_users, refs = needed_secrets(doc.spec)
        secrets: dict[str, dict[str, str]] = {}
        for kind, names in (("totp", totp_users), ("passwords", refs)):
            for name in names:
                sealed = self.store.sealed_secret(kind, name)
                if sealed is not None:
                    secrets.setdefault(kind, {})[name] = self.vault.open(
                        kind, name, sealed
                    ).reveal()
        return Rendered(etag, revision, data, secrets)
