"""Test hosts: throw-away Debian systems in their own namespaces, for end-to-end tests.

A test host behaves like a small VM for everything jcstate touches (users, groups, sshd, PAM),
yet starts in well under a second and never changes the machine running the tests
(see /work/shared/TESTHOSTS.md for the recipe this follows).

How one is put together::

    ~/.cache/jcstate/img-<hash>/          debootstrap'd bookworm, built once, shared read-only
            │ lowerdir
    <tmp>/jcstate-th-XXXX/root            overlayfs merged dir, mounted in *our* mount namespace,
            │                             so ROOT is a real path the tests (and `--root ROOT`) see
            ▼
    unshare --mount --pid --uts --fork    init (this file, ``--init``): sets the hostname, mounts
                                          /proc and /dev under ROOT *inside* the new namespace
                                          only, chroots into ROOT and reaps orphans as PID 1

Commands run inside the host with ``nsenter`` into the init's namespaces and root, so they
see the host's /proc, /dev, hostname and PID 1. From outside, ROOT is the host's filesystem:
shadow-utils ``--root ROOT``, ``jcstate apply --root ROOT`` and testinfra's chroot backend all
drive it without entering it. When overlayfs is not available, ROOT is a ``cp -a`` copy of
the image instead.

Only stdlib imports here: the same file is the init process of every host.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGE_PACKAGES",
    "TestHost",
    "TestHostError",
    "ensure_image",
    "free_port",
    "leftovers",
    "missing_requirements",
    "mounts_under",
    "stop_all",
    "testinfra_host",
]

SUITE = "bookworm"
VARIANT = "minbase"
# What the end-to-end tests need inside a host. Changing this list changes the cache key,
# so a new image is built next time; the old one can be deleted by hand.
IMAGE_PACKAGES = (
    "openssh-server",
    "libpam-google-authenticator",
    "passwd",
    "login",
    "sudo",
    "procps",
    "python3",
)
MIRROR = os.environ.get("JCSTATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TMP_PREFIX = "jcstate-th-"
_SAFE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
    "HOME": "/root",
}


class TestHostError(RuntimeError):
    """A test host could not be built, started, entered or cleaned up."""


# -- the image -------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where images live: $JCSTATE_CACHE, else ~/.cache/jcstate (outside the repo)."""
    return Path(os.environ.get("JCSTATE_CACHE", Path.home() / ".cache" / "jcstate"))


def image_key(packages: Sequence[str] = IMAGE_PACKAGES) -> str:
    """A short hash of everything that decides the image's content."""
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": sorted(packages), "mirror": MIRROR}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def ensure_image(packages: Sequence[str] = IMAGE_PACKAGES, *, cache: Path | None = None) -> Path:
    """The cached image's path, built with debootstrap on first use (about a minute).

    ``$JCSTATE_TESTHOST_IMAGE`` names a ready image instead (for offline machines). A lock file
    makes concurrent pytest processes wait for one build; the build goes to a temporary
    directory that is renamed into place only when debootstrap succeeded, so a half-built
    image is never used.
    """
    given = os.environ.get("JCSTATE_TESTHOST_IMAGE")
    if given:
        if not Path(given, "etc", "os-release").exists():
            raise TestHostError(f"JCSTATE_TESTHOST_IMAGE={given} is not a system image")
        return Path(given)
    cache = cache or cache_dir()
    key = image_key(packages)
    image = cache / f"img-{key}"
    if image.is_dir():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"img-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.is_dir():  # another process built it while we waited
            return image
        for stale in cache.glob(f"img-{key}.building-*"):
            _remove_tree(stale)
        building = Path(tempfile.mkdtemp(prefix=f"img-{key}.building-", dir=cache))
        log_path = cache / f"img-{key}.log"
        argv = [
            "debootstrap",
            f"--variant={VARIANT}",
            "--include=" + ",".join(packages),
            SUITE,
            str(building),
            MIRROR,
        ]
        try:
            with open(log_path, "w") as log:
                proc = subprocess.run(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=_SAFE_ENV, check=False
                )
            if proc.returncode != 0:
                raise TestHostError(f"debootstrap exited {proc.returncode}; see {log_path}")
            os.rename(building, image)
        finally:
            if building.exists():
                _remove_tree(building)
    return image


# -- mounts ----------------------------------------------------------------------------------
def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(path: str | os.PathLike[str], *, pid: int | str = "self") -> list[str]:
    """Mount points at or below ``path`` in the mount namespace of ``pid``, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            target = _unescape_mountinfo(line.split()[4])
            if target == base or target.startswith(base.rstrip("/") + "/"):
                found.append(target)
    return sorted(found, key=len, reverse=True)


def _umount(target: str) -> None:
    """Unmount; fall back to a lazy unmount when something still holds it open."""
    proc = subprocess.run(["umount", target], capture_output=True, env=_SAFE_ENV, check=False)
    if proc.returncode != 0:
        subprocess.run(
            ["umount", "--lazy", target], capture_output=True, env=_SAFE_ENV, check=False
        )


def _remove_tree(path: Path) -> None:
    """Unmount whatever is below ``path``, then delete it — never through a live mount.

    shutil.rmtree does not stop at mount points: deleting a tree with /dev or the project's
    venv bound into it would delete those. So we refuse unless nothing is mounted below.
    """
    for target in mounts_under(path):
        _umount(target)
    left = mounts_under(path)
    if left:
        raise TestHostError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=False)


def _overlay_supported() -> bool:
    if os.environ.get("JCSTATE_TESTHOST_COPY"):  # force the cp -a path (to test it)
        return False
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == "overlay" for line in f if line.strip())


# -- requirements ------------------------------------------------------------------------------
def missing_requirements() -> str | None:
    """Why test hosts cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "test hosts need Linux namespaces"
    if os.geteuid() != 0:
        return "test hosts need root (mounts and namespaces)"
    for tool in ("unshare", "nsenter", "mount", "umount", "chroot"):
        if shutil.which(tool) is None:
            return f"test hosts need {tool} (util-linux/coreutils)"
    if not os.environ.get("JCSTATE_TESTHOST_IMAGE") and shutil.which("debootstrap") is None:
        return "test hosts need debootstrap to build the image (apt-get install debootstrap)"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--uts", "--fork", "true"],
        capture_output=True,
        env=_SAFE_ENV,
        check=False,
    )
    if probe.returncode != 0:
        return "unshare --mount --pid --uts is not permitted here: " + probe.stderr.decode().strip()
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def testinfra_host(root: str | os.PathLike[str]) -> Any:
    """A testinfra host for a root filesystem, through the chroot backend.

    ``testinfra.get_host("chroot://" + root)`` does *not* work: the URL parser puts the path in
    the URL's path, not its netloc, and the backend gets an empty name. Passing the path as the
    host spec with ``connection="chroot"`` is the form that works.
    """
    import testinfra

    return testinfra.get_host(os.fspath(root), connection="chroot")


# -- a host ------------------------------------------------------------------------------------
_ACTIVE: set[TestHost] = set()
_WORKDIRS: list[Path] = []  # every host copy this process made, for the end-of-session check


class TestHost:
    """One fresh Debian system in its own mount, PID and UTS namespaces.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (stop is safe to call
    twice and after a failed start). ``root`` is the host's filesystem as seen from outside.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, hostname: str = "testhost", *, image: Path | None = None):
        self.hostname = hostname
        self.image = image
        self.workdir: Path | None = None
        self.root: Path = Path("/nonexistent")
        self.overlay = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the init's pid, as seen from outside
        self.sshd_port: int | None = None
        self.start_seconds: float | None = None
        self._bound: list[str] = []

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> TestHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TestHost:
        """Make a fresh copy of the image and start the namespaces' init in it."""
        started = time.monotonic()
        image = self.image or ensure_image()
        self.workdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        _WORKDIRS.append(self.workdir)
        _ACTIVE.add(self)
        try:
            self.root = self.workdir / "root"
            self.root.mkdir()
            if _overlay_supported():
                self._mount_overlay(image)
            else:
                subprocess.run(
                    ["cp", "-a", "--reflink=auto", f"{image}/.", str(self.root)],
                    check=True,
                    env=_SAFE_ENV,
                )
            # What a booted machine would have: tools reading the image see the same name.
            self.path("/etc/hostname").write_text(self.hostname + "\n")
            self._start_init()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _mount_overlay(self, image: Path) -> None:
        assert self.workdir is not None
        upper, work = self.workdir / "upper", self.workdir / "work"
        upper.mkdir()
        work.mkdir()
        for p in (image, upper, work):
            if any(ch in str(p) for ch in ",:\\"):
                raise TestHostError(f"{p}: overlayfs options cannot hold this path")
        options = f"lowerdir={image},upperdir={upper},workdir={work}"
        proc = subprocess.run(
            ["mount", "-t", "overlay", "jcstate-testhost", "-o", options, str(self.root)],
            capture_output=True,
            text=True,
            env=_SAFE_ENV,
            check=False,
        )
        if proc.returncode != 0:
            raise TestHostError(f"overlay mount failed: {proc.stderr.strip()}")
        self.overlay = True

    def _start_init(self) -> None:
        argv = [
            "unshare",
            "--mount",
            "--pid",
            "--uts",
            "--fork",
            "--propagation",
            "private",
            "--kill-child",  # if unshare dies, so does the namespace's init, and with it the host
            sys.executable,
            os.path.abspath(__file__),
            "--init",
            str(self.root),
            self.hostname,
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_SAFE_ENV,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("ready "):
            self.proc.kill()
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise TestHostError(f"test host init did not start: {line or 'timeout'} {err}")
        # Inside, the init is PID 1; nsenter needs its outside pid: unshare's only child.
        self.pid = _only_child(self.proc.pid)

    def stop(self) -> None:
        """End every process of the host, unmount, delete the copy. Safe to call again."""
        errors = []
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()  # --kill-child takes the init, the kernel the rest of the ns
            self.proc.wait(timeout=30)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None
        if self.pid is not None:
            _wait_gone(self.pid)
            self.pid = None
        if self.workdir is not None:
            try:
                _remove_tree(self.workdir)
            except (OSError, TestHostError) as exc:
                errors.append(str(exc))
            self.workdir = None
        _ACTIVE.discard(self)
        if errors:
            raise TestHostError("; ".join(errors))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- inside the host -------------------------------------------------------------------
    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside the host (its namespaces and root)."""
        if self.pid is None:
            raise TestHostError("the test host is not running")
        return [
            "nsenter",
            "--target",
            str(self.pid),
            "--mount",
            "--uts",
            "--pid",
            "--root",
            "--wd",
            "--",
            *argv,
        ]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host; ``input`` goes to stdin (the place for passwords)."""
        run_env = dict(_SAFE_ENV)
        run_env.update(env or {})
        proc = subprocess.run(
            self.command(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=run_env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise TestHostError(
                f"{' '.join(argv)} exited {proc.returncode} in {self.hostname}: "
                f"{proc.stderr.strip()}"
            )
        return proc

    def path(self, inside: str) -> Path:
        """The outside path of a path inside the host."""
        return self.root / inside.lstrip("/")

    def set_password(self, user: str, password: str) -> None:
        """Set a password with chpasswd; it goes through stdin, never argv."""
        self.run(["chpasswd"], input=f"{user}:{password}\n")

    def start_sshd(self, port: int | None = None, *, options: Sequence[str] = ()) -> int:
        """Start sshd inside the host on 127.0.0.1:PORT; returns the port once it accepts."""
        port = port or free_port()
        self.path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        argv = [
            "/usr/sbin/sshd",
            "-p",
            str(port),
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            "PidFile=/run/sshd.pid",
        ]
        for opt in options:
            argv += ["-o", opt]
        self.run(argv)  # sshd forks into the background once it listens
        _wait_port(port)
        self.sshd_port = port
        return port

    def install_jcstate(self) -> list[str]:
        """Make this interpreter, its venv and the project's source visible inside the host.

        Read-only bind mounts at the same paths, inside the host's mount namespace only, so
        ``host.run([sys.prefix + "/bin/jcstate", ...])`` runs the project's own code as it would
        run on a device. Returns the paths bound.
        """
        if self.pid is None:
            raise TestHostError("the test host is not running")
        for src in _jcstate_paths():
            if any(src == b or src.startswith(b.rstrip("/") + "/") for b in self._bound):
                continue
            if os.path.isdir(src):
                self.path(src).mkdir(parents=True, exist_ok=True)
            else:
                self.path(src).parent.mkdir(parents=True, exist_ok=True)
                self.path(src).touch(exist_ok=True)
            target = str(self.path(src))
            mount = [
                "nsenter",
                "--target",
                str(self.pid),
                "--mount",
                "--",
                "mount",
                "--bind",
                "-o",
                "ro",
                src,
                target,
            ]
            proc = subprocess.run(mount, capture_output=True, text=True, env=_SAFE_ENV, check=False)
            if proc.returncode != 0:
                raise TestHostError(f"bind mount of {src} failed: {proc.stderr.strip()}")
            self._bound.append(src)
        return list(self._bound)

    def processes(self) -> dict[int, str]:
        """Every process inside the host but its init: outside pid → command line.

        Orphans inside a pid namespace are adopted by its init, so a process that outlives
        its parent (a converge worker after its agent was killed, a ``useradd`` it started)
        is still found here until it ends.
        """
        if self.pid is None:
            raise TestHostError("the test host is not running")
        namespace = os.readlink(f"/proc/{self.pid}/ns/pid")
        found: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.pid:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # gone meanwhile
            found[int(entry)] = cmdline
        return found

    def jcstate(
        self, *args: str, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the project's ``jcstate`` command inside the host (after install_jcstate)."""
        if not self._bound:
            self.install_jcstate()
        return self.run([str(Path(sys.prefix, "bin", "jcstate")), *args], input=input, check=check)

    def __repr__(self) -> str:
        return f"<TestHost {self.hostname} root={self.root} pid={self.pid}>"


def _jcstate_paths() -> list[str]:
    """What must be visible inside a host for the project's venv to run there."""
    paths = [sys.prefix]
    # The editable install points at the source tree, which may live outside the venv.
    import jcstate

    paths.append(str(Path(jcstate.__file__).resolve().parent.parent))
    base = sys.base_prefix
    if base in ("/usr", "/"):
        # A distribution Python: bind only its own files, never the image's whole /usr.
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        paths += [f"{base.rstrip('/')}/lib/{version}", os.path.realpath(sys.executable)]
    else:
        paths.append(base)  # pyenv, /usr/local, /opt/...: a self-contained prefix
    # Deepest paths after their parents so that "already bound" checks work.
    return sorted({os.path.realpath(p) for p in paths}, key=len)


def _only_child(pid: int) -> int:
    """The pid of the single child of ``pid`` (unshare --fork's child is the host's init)."""
    path = f"/proc/{pid}/task/{pid}/children"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(path) as f:
            children = f.read().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise TestHostError(f"unshare (pid {pid}) has no child")


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # dead; its new parent will reap it
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise TestHostError(f"test host init {pid} did not exit")


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise TestHostError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.02)


def stop_all() -> list[str]:
    """Stop every host still running (after a crash in a test); returns their names."""
    names = []
    for host in list(_ACTIVE):
        names.append(host.hostname)
        with contextlib.suppress(TestHostError, OSError, subprocess.SubprocessError):
            host.stop()
    return names


def leftovers() -> list[str]:
    """Mounts and directories that hosts started by this process left behind.

    Only this process's own hosts: other pytest runs on the machine may have hosts running.
    """
    found = []
    for workdir in _WORKDIRS:
        found += mounts_under(workdir)
        if workdir.exists():
            found.append(str(workdir))
    return found


atexit.register(stop_all)


@contextlib.contextmanager
def running_host(hostname: str = "testhost", **kwargs: Any) -> Iterator[TestHost]:
    """A started host that is stopped on the way out, whatever happens."""
    host = TestHost(hostname, **kwargs)
    try:
        yield host.start()
    finally:
        host.stop()


# -- the init process ------------------------------------------------------------------------
def _init(root: str, hostname: str) -> None:
    """PID 1 of a host: set it up, then reap orphans until the namespace is torn down."""
    socket.sethostname(hostname)
    # These mounts exist only in this (private) mount namespace: they vanish with it, and
    # the outside view of ROOT never has a live /proc or /dev in it.
    subprocess.run(["mount", "-t", "proc", "proc", f"{root}/proc"], check=True)
    subprocess.run(["mount", "--rbind", "/dev", f"{root}/dev"], check=True)
    os.chroot(root)
    os.chdir("/")
    sys.stdout.write("ready 1\n")
    sys.stdout.flush()
    os.close(1)

    def reap(*_: object) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--init":
        _init(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: testhost.py --init ROOT HOSTNAME  (started by TestHost, not by hand)")
