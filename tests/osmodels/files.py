"""The files of a simulated OS, in memory: what the Host file methods do, for the models.

Engine code that reads or writes files through the host (the FileVault deferral plist, the
commands journal) then works against a model exactly as against a real root. Directories must
exist before a file goes in them, as with the real Host; ``lstat`` is not modelled (loudly).
"""

from __future__ import annotations

from typing import Any

from jcstate.secret import Secret

from . import ModelError


class MemoryFiles:
    """Mix-in for a model Host: ``files`` (path → bytes) and ``dirs`` (path → mode)."""

    files: dict[str, bytes]
    dirs: dict[str, int]

    def _init_files(self, *dirs: str) -> None:
        self.files = {}
        self.dirs = {"/": 0o755}
        for path in dirs:
            self.dirs[path] = 0o755

    @staticmethod
    def _parent(path: str) -> str:
        return path.rsplit("/", 1)[0] or "/"

    def read_bytes(self, path: str) -> bytes | None:
        return self.files.get(path)

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def list_dir(self, path: str) -> list[str] | None:
        if path not in self.dirs:
            return None
        inside = [p for p in [*self.files, *self.dirs] if p != path and self._parent(p) == path]
        return sorted(p.rsplit("/", 1)[1] for p in inside)

    def write_file(
        self,
        path: str,
        data: str | bytes | Secret,
        *,
        mode: int = 0o644,
        owner: Any = None,
        group: Any = None,
        make_dirs: bool = False,
        sync_dir: bool = False,
    ) -> None:
        if self._parent(path) not in self.dirs:
            raise ModelError(f"write {path}: no directory {self._parent(path)}")
        raw = data.reveal() if isinstance(data, Secret) else data
        self.files[path] = raw.encode() if isinstance(raw, str) else raw

    def make_dir(
        self, path: str, *, mode: int = 0o755, owner: Any = None, group: Any = None
    ) -> None:
        if self._parent(path) not in self.dirs:
            raise ModelError(f"mkdir {path}: parent missing")
        self.dirs[path] = mode

    def remove_file(self, path: str) -> bool:
        return self.files.pop(path, None) is not None

    def lstat(self, path: str) -> Any:
        raise ModelError(f"lstat {path}: not modelled")
