"""The one object through which jcstate touches a system.

Every module runs commands, reads files and writes files through a :class:`Host`; nothing
else calls ``subprocess`` or opens ``/etc``. A host has a *root*: ``/`` for the running machine,
or the mount point of a system image (``--root DIR``). Paths given to a host are always paths
*inside* the managed system (``/etc/passwd``), and are resolved under the root without ever
leaving it.

Path safety: a symlink in a path is followed only when root owns it (``/var/run → /run``), and
is then resolved inside the root, never on the machine running jcstate. A symlink owned by
anyone else (a user planting ``~/.ssh → /root/.ssh``) makes the operation fail with
:class:`UnsafePath`. The last component of a write is never followed: the file is written to a
temporary name in the same directory and renamed over the old one, so a planted link is
replaced, and its target is left untouched.
"""

from __future__ import annotations

import errno
import os
import platform
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jcstate.errors import CommandFailed, HostError, UnsafePath
from jcstate.secret import Secret

if TYPE_CHECKING:
    import subprocess

__all__ = ["Host", "RunResult"]


def _debug(message: str, *args: object) -> None:
    """Log at debug level, if anything set logging up: ``jcstate plan``/``apply`` without
    ``-v`` do not import it (3 ms of a no-op run), and then no handler would show it anyway."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(message, *args)


_MAX_LINK_HOPS = 40
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunResult:
    """What a command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float


def _system_os() -> str:
    return {"Linux": "linux", "Darwin": "darwin", "Windows": "windows"}.get(
        platform.system(), platform.system().lower()
    )


class Host:
    """A system to manage: the running machine (``root="/"``) or a mounted image."""

    def __init__(self, root: str = "/", os_name: str | None = None):
        self.root = os.path.abspath(root)
        self.os = os_name or _system_os()
        self.commands_run: list[tuple[str, ...]] = []
        self._round: dict[Any, Any] | None = None

    # -- facts rounds ---------------------------------------------------------------------
    @contextmanager
    def facts_round(self) -> Iterator[None]:
        """While open, :meth:`remember` reads each thing once (several resources share facts).

        The engine opens one round per gathering; after an apply a new round reads afresh.
        """
        outer, self._round = self._round, {}
        try:
            yield
        finally:
            self._round = outer

    def remember(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, or within a facts round, what it gave the first time for ``key``."""
        if self._round is None:
            return compute()
        if key not in self._round:
            self._round[key] = compute()
        return self._round[key]

    # -- commands -----------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | Secret | None = None,
        check: bool = True,
        timeout: float | None = 300,
        env: Mapping[str, str] | None = None,
        chroot: bool = False,
    ) -> RunResult:
        """Run ``argv`` (never through a shell). ``stdin`` may be a Secret: it only enters the pipe.

        ``chroot=True`` runs the command inside the root for tools that take no root prefix.
        """
        argv = tuple(str(a) for a in argv)
        if chroot and self.root != "/":
            argv = ("chroot", self.root, *argv)
        data = stdin.reveal() if isinstance(stdin, Secret) else stdin
        run_env = {"PATH": _SAFE_PATH, "LC_ALL": "C", "LANG": "C"}
        if env:
            run_env.update(env)
        _debug("run %s", argv)
        self.commands_run.append(argv)
        import subprocess  # here: a run that changes nothing runs no command (3 ms of imports)

        start = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                input=data,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=run_env,
                check=False,
            )
        except FileNotFoundError as exc:
            raise CommandFailed(argv, 127, f"{argv[0]}: command not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(argv, 124, f"timed out after {timeout} s") from exc
        result = RunResult(
            argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start
        )
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stderr)
        return result

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        chroot: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own, stdout and stderr piped, stdin closed.

        For commands whose caller must stream their output and end them as a whole process
        group (``commands`` action ``run``: timeouts, capped output); everything else uses
        :meth:`run`. On Windows the child gets a new process group instead of a session.
        """
        argv = tuple(str(a) for a in argv)
        if chroot and self.root != "/":
            argv = ("chroot", self.root, *argv)
        run_env = {"PATH": _SAFE_PATH, "LC_ALL": "C", "LANG": "C"}
        if env:
            run_env.update(env)
        _debug("spawn %s", argv)
        self.commands_run.append(argv)
        import subprocess

        group: dict[str, object] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
            if os.name == "nt"
            else {"start_new_session": True}
        )
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=run_env,
                **group,  # type: ignore[arg-type]
            )
        except FileNotFoundError as exc:
            raise CommandFailed(argv, 127, f"{argv[0]}: command not found") from exc

    # -- paths --------------------------------------------------------------------------
    def real_path(self, path: str) -> str:
        """The path on the machine running jcstate (for display and for tools given --root)."""
        return os.path.join(self.root, path.lstrip("/"))

    @contextmanager
    def _parent_dir(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """Open the directory holding ``path`` safely; yield (dir fd, last component)."""
        if not path.startswith("/"):
            raise UnsafePath(f"{path}: not an absolute path")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts:
            raise UnsafePath(f"{path}: names the root itself")
        fd = self._walk(path, parts[:-1], create=create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def _walk(self, path: str, parts: list[str], *, create: bool) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        root_fd = os.open(self.root, flags)
        trail = [root_fd]
        pending = list(reversed(parts))
        hops = 0
        try:
            while pending:
                name = pending.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(trail) > 1:
                        os.close(trail.pop())
                    continue
                cur = trail[-1]
                try:
                    nfd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=cur)
                    nfd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise UnsafePath(f"{path}: {name} is not a directory") from exc
                    if st.st_uid != 0:
                        raise UnsafePath(
                            f"{path}: {name} is a symlink owned by uid {st.st_uid}; "
                            "jcstate follows only links owned by root"
                        ) from exc
                    hops += 1
                    if hops > _MAX_LINK_HOPS:
                        raise UnsafePath(f"{path}: too many levels of symlinks") from exc
                    target = os.readlink(name, dir_fd=cur)
                    if target.startswith("/"):
                        while len(trail) > 1:
                            os.close(trail.pop())
                    pending.extend(reversed(target.split("/")))
                    continue
                trail.append(nfd)
            result = trail.pop()
            return result
        finally:
            for fd in trail:
                os.close(fd)

    # -- files --------------------------------------------------------------------------
    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist. The last component is not followed."""
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="surrogateescape")

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist.

        A last component that is a symlink is followed (inside the root) only when root owns
        it, as with directories: ``/etc/os-release → ../usr/lib/os-release`` reads fine, a
        user's ``~/.ssh/authorized_keys → /etc/shadow`` raises UnsafePath.
        """
        for _ in range(_MAX_LINK_HOPS):
            try:
                with self._parent_dir(path) as (dfd, name):
                    try:
                        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                    except OSError as exc:
                        if exc.errno != errno.ELOOP:
                            raise
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        if st.st_uid != 0:
                            raise UnsafePath(
                                f"{path}: is a symlink owned by uid {st.st_uid}; "
                                "refusing to read through it"
                            ) from exc
                        target = os.readlink(name, dir_fd=dfd)
                        path = (
                            target
                            if target.startswith("/")
                            else (os.path.join(os.path.dirname(path), target))
                        )
                        continue
            except (FileNotFoundError, NotADirectoryError):
                return None
            except UnsafePath:
                raise
            except OSError as exc:
                raise HostError(f"cannot read {path}: {exc.strerror}") from exc
            with os.fdopen(fd, "rb") as f:
                return f.read()
        raise UnsafePath(f"{path}: too many levels of symlinks")

    def lstat(self, path: str) -> os.stat_result | None:
        """lstat() inside the root, or None when the path does not exist."""
        try:
            with self._parent_dir(path) as (dfd, name):
                return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def exists(self, path: str) -> bool:
        return self.lstat(path) is not None

    def list_dir(self, path: str) -> list[str] | None:
        """The names in a directory (sorted), or None when it does not exist."""
        if not path.startswith("/"):
            raise UnsafePath(f"{path}: not an absolute path")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        try:
            fd = self._walk(path, parts, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def write_file(
        self,
        path: str,
        data: str | bytes | Secret,
        *,
        mode: int = 0o644,
        owner: int | str | None = None,
        group: int | str | None = None,
        make_dirs: bool = False,
        sync_dir: bool = False,
    ) -> None:
        """Write atomically: a temporary file in the same directory, fsync, rename over.

        ``sync_dir=True`` also fsyncs the directory after the rename, so the new name itself
        survives a power cut (journals that must never forget a record).
        """
        if isinstance(data, Secret):
            data = data.reveal()
        raw = data.encode() if isinstance(data, str) else data
        uid, gid = self.resolve_ids(owner, group)
        with self._parent_dir(path, create=make_dirs) as (dfd, name):
            tmp = f".{name}.jcstate-{os.getpid()}-{time.monotonic_ns()}"
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dfd,
            )
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(raw)
                    f.flush()
                    if uid != -1 or gid != -1:
                        os.fchown(f.fileno(), uid, gid)
                    os.fchmod(f.fileno(), mode)
                    os.fsync(f.fileno())
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                if sync_dir:
                    os.fsync(dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except FileNotFoundError:
                    pass
                raise

    def remove_file(self, path: str) -> bool:
        """Remove a file or symlink, never what a link points to. True when one was removed."""
        try:
            with self._parent_dir(path) as (dfd, name):
                os.unlink(name, dir_fd=dfd)
                return True
        except FileNotFoundError:
            return False

    def make_dir(
        self,
        path: str,
        *,
        mode: int = 0o755,
        owner: int | str | None = None,
        group: int | str | None = None,
    ) -> None:
        """Create a directory (parents must exist) or fix an existing one's owner and mode."""
        uid, gid = self.resolve_ids(owner, group)
        with self._parent_dir(path) as (dfd, name):
            try:
                os.mkdir(name, mode, dir_fd=dfd)
            except FileExistsError:
                pass
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd
                )
            except OSError as exc:
                raise UnsafePath(f"{path}: exists and is not a directory") from exc
            try:
                if uid != -1 or gid != -1:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    # -- accounts ------------------------------------------------------------------------
    def resolve_ids(self, owner: int | str | None, group: int | str | None) -> tuple[int, int]:
        """Turn user/group names into ids using the managed system's own account files."""
        uid = -1 if owner is None else owner
        gid = -1 if group is None else group
        if isinstance(uid, str):
            uid = self._lookup("/etc/passwd", uid)
        if isinstance(gid, str):
            gid = self._lookup("/etc/group", gid)
        return int(uid), int(gid)

    def _lookup(self, path: str, name: str) -> int:
        for line in (self.read_text(path) or "").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name:
                return int(fields[2])
        raise HostError(f"{name}: no such entry in {path}")

    def os_release(self) -> dict[str, str]:
        """/etc/os-release of the managed system, as a dict (empty when absent)."""
        text = self.read_text("/etc/os-release") or self.read_text("/usr/lib/os-release") or ""
        out: dict[str, str] = {}
        for line in text.splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip().strip('"')
        return out
