"""The canary sweeper: find secret values, in any of the forms they could leak in, anywhere.

A :class:`Canary` is one secret value the scenario moved through the system. ``forms()`` are the
byte strings a leak of it could take: the value itself, JSON-escaped, URL-encoded (``quote`` and
``quote_plus``), hex (both cases) and base64 (standard and URL-safe alphabets, at each of the
three alignments the value could start at inside a longer encoded blob, so a secret buried in a
base64 document is found too).

:class:`Sweep` collects hits from files, trees, database rows and process snapshots. A place
where a secret lives by design is declared with :meth:`Sweep.allow` (canary name, place
pattern, why); hits there are counted apart and never hide a hit anywhere else.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Canary", "Hit", "Sweep"]


@dataclass(frozen=True)
class Canary:
    name: str  # what it is: "password hash", "TOTP secret", …
    value: str

    def forms(self) -> dict[str, bytes]:
        raw = self.value.encode()
        found = {
            "raw": raw,
            "json": json.dumps(self.value)[1:-1].encode(),
            "url": urllib.parse.quote(self.value, safe="").encode(),
            "url+": urllib.parse.quote_plus(self.value).encode(),
            "hex": raw.hex().encode(),
            "HEX": raw.hex().upper().encode(),
        }
        for alphabet, encode in (
            ("base64", base64.b64encode),
            ("base64url", base64.urlsafe_b64encode),
        ):
            for shift in range(3):
                # the characters that depend only on the value's bytes, whatever surrounds it
                text = encode(b"\0" * shift + raw)
                first = -(-8 * shift // 6)
                last = 8 * (shift + len(raw)) // 6
                found[f"{alphabet}@{shift}"] = text[first:last]
        # a form shorter than 12 bytes would match by chance; the canaries are long
        return {k: v for k, v in found.items() if len(v) >= 12}


@dataclass(frozen=True)
class Hit:
    canary: str
    form: str
    place: str  # "file /var/log/jcstate.log", "db reports.body row 3", "ps pid 42 argv"
    context: str

    def __str__(self) -> str:
        return f"{self.canary} ({self.form}) in {self.place}: …{self.context}…"


@dataclass
class Sweep:
    canaries: list[Canary]
    allowed: list[tuple[str, str, str]] = field(default_factory=list)  # canary, place glob, why
    hits: list[Hit] = field(default_factory=list)
    by_design: list[Hit] = field(default_factory=list)
    looked_at: dict[str, int] = field(default_factory=dict)  # kind of place → how many

    def allow(self, canary: str, place: str, why: str) -> None:
        """``canary`` may be found at places matching the glob ``place``, by design."""
        assert any(c.name == canary for c in self.canaries), canary
        self.allowed.append((canary, place, why))

    def _is_allowed(self, canary: str, place: str) -> bool:
        return any(c == canary and fnmatch.fnmatchcase(place, p) for c, p, _ in self.allowed)

    def bytes(self, data: bytes, place: str, kind: str) -> None:
        """Look for every canary in every form in ``data``."""
        self.looked_at[kind] = self.looked_at.get(kind, 0) + 1
        for canary in self.canaries:
            for form, needle in canary.forms().items():
                at = data.find(needle)
                if at < 0:
                    continue
                lo, hi = max(0, at - 40), at + len(needle) + 40
                context = data[lo:hi].decode(errors="replace")
                hit = Hit(canary.name, form, place, context)
                if self._is_allowed(canary.name, place):
                    self.by_design.append(hit)
                else:
                    self.hits.append(hit)
                break  # one form is enough to name this place for this canary

    def text(self, text: str, place: str, kind: str) -> None:
        self.bytes(text.encode(errors="surrogateescape"), place, kind)

    def file(self, path: Path, place: str | None = None, kind: str = "file") -> None:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return
        self.bytes(data, place or f"file {path}", kind)

    def tree(self, root: Path, label: str, kind: str = "file") -> None:
        """Every regular file under ``root`` (symlinks not followed), named ``label`` + path."""
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                if path.is_symlink() or not path.is_file():
                    continue
                inside = "/" + str(path.relative_to(root))
                self.file(path, f"{label}{inside}", kind)

    def rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Every column of every row, as text (JSON columns as stored)."""
        for n, row in enumerate(rows):
            for column, value in row.items():
                if value is None:
                    continue
                if isinstance(value, bytes):
                    data = value
                elif isinstance(value, str):
                    data = value.encode()
                else:
                    data = json.dumps(value, default=str).encode()
                self.bytes(data, f"db {table}.{column} row {n}", "db value")

    def report(self) -> str:
        lines = [f"{len(self.hits)} hit(s):", *(f"  {h}" for h in self.hits)]
        lines.append(f"looked at: {self.looked_at}")
        return "\n".join(lines)
