"""Canary sweep: secrets moved end to end through server, agent and device, then searched for.

A real ``jcstate server`` (SQLite, JSON logs at debug level with the access log) and the real
agent in a test host carry six canaries, each a fresh random value:

* a crypt(3) password hash written in a policy (``password.hash`` of carol), and a second hash
  set behind jcstate's back on the device (drift: the plan and the report see it as "before");
* a plaintext password held by the server (``jcstate password set``, ``password.secretRef``)
  and the shadow hash the device made of it;
* the TOTP secret the server enrolled for alice (``POST /api/v1/totp/alice``, taken from the
  answer: nobody chooses it);
* the administrator token and the connect key of the data directory;
* a FileVault recovery key escrowed by a simulated macOS device with a signed request.

A ``run`` command (no secret in its argv) goes through the queue as well. While it runs, a
sampler snapshots every process's argv on the machine, and the environment of the server and
of every process inside the test host (agent, converge workers, shadow-utils, chpasswd).

Then the sweep: server stdout/stderr, the agent's stdout/stderr and log file, every file the
scenario wrote inside the host (the overlay's upper directory: state dir, ledger, journal,
outbox, /var/log, /tmp …), the data directory, the raw SQLite files, every row of every table,
the audit log and what every read-only admin route shows, the standalone plan (text and JSON):
0 hits in raw, JSON, URL, hex and base64 forms. The places where a secret lives by design are
the ``BY_DESIGN`` list below (and docs/testing.md); sealed columns are swept too, and must hold
``v1:`` ciphertext. Last, the sweeper checks itself: a leak planted in a file, a database row,
an API-visible audit entry and a process's argv is found, each where it was planted.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import sqlite3
import string
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import live
import pyotp
import testhost as th
from canary import Canary, Sweep
from harness import jcstate_argv
from test_agent_e2e import wait_for

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.modules.users import password as pwmod
from jcstate.secret import Secret
from jcstate.server.api_client import AdminClient

STATE = "/var/lib/jcstate"
LOG = "/var/log/jcstate.log"
VOLUME = "C0FFEE00-1111-2222-3333-444455556666"
SAFE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
CRYPT64 = string.ascii_letters + string.digits + "./"

# (canary, place glob, why): the only places a canary may be found
BY_DESIGN = [
    ("password hash", "db revisions.files row *", "Linux hashes are written in the policy repo"),
    ("password hash", "api GET /api/v1/revisions/*", "the policy repo's files (and their diff)"),
    ("password hash", "data /jcstate.db*", "the SQLite file of the revisions row above"),
    ("connect key", "data /jcstate.db*", "the SQLite file of the connect_keys row below"),
    ("password hash", "host /etc/shadow", "the account's password"),
    ("password hash", "host /etc/shadow-", "shadow-utils' backup of the previous shadow"),
    ("drift hash", "host /etc/shadow-", "shadow-utils' backup of the previous shadow"),
    ("alice's shadow hash", "host /etc/shadow", "the account's password"),
    ("alice's shadow hash", "host /etc/shadow-", "shadow-utils' backup of the previous shadow"),
    (
        "TOTP secret",
        "host /home/alice/.google_authenticator",
        "what pam_google_authenticator reads",
    ),
    ("admin token", "data /admin-token", "the first token, for the administrator (0600)"),
    ("connect key", "data /connect-key", "the first connect key, for the administrator (0600)"),
    ("connect key", "db connect_keys.key row *", "not a secret (SPEC): listed to administrators"),
    ("connect key", "host /etc/jcstate/connect-key", "the agent's --connect-key-file (0600)"),
]
# sealed columns: swept like every other column, and must be vault ciphertext
SEALED = [("secrets", "ciphertext"), ("recovery_keys", "ciphertext")]


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _policy(hash_: str) -> str:
    return f"""\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: eng}}
selector: {{os: [linux]}}
spec:
  users:
    - name: alice
      uid: 1601
      shell: /bin/sh
      password: {{secretRef: alice-pw}}
    - name: carol
      uid: 1602
      password: {{hash: "{hash_}"}}
  sshMfa: {{enabled: true, users: [alice]}}
"""


class ProcessSampler(threading.Thread):
    """Snapshots of /proc every 50 ms: every process's argv on this machine, and the environ
    of the server and of every process inside the test host. Unique values are kept."""

    def __init__(self, host: th.TestHost, server_pid: int):
        super().__init__(daemon=True)
        self.host, self.server_pid = host, server_pid
        self.argv: dict[bytes, str] = {}  # argv → "pid N: first words"
        self.environ: dict[bytes, str] = {}
        self.snapshots = 0
        self.saw_in_host: set[str] = set()  # program names seen inside the host
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.snapshot()
            self._stop_event.wait(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def snapshot(self) -> None:
        host_ns = os.readlink(f"/proc/{self.host.pid}/ns/pid") if self.host.running else None
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes()
                inside = host_ns is not None and os.readlink(f"/proc/{entry}/ns/pid") == host_ns
                shown = argv[:60].replace(b"\0", b" ").decode(errors="replace")
                where = f"pid {entry} ({shown})"
                self.argv.setdefault(argv, where)
                if inside or int(entry) == self.server_pid:
                    environ = Path(f"/proc/{entry}/environ").read_bytes()
                    self.environ.setdefault(environ, where)
                if inside and int(entry) != self.host.pid:
                    words = argv.split(b"\0")
                    name = words[0].rsplit(b"/", 1)[-1].decode(errors="replace")
                    if b"jcstate.agent.worker" in argv:
                        name = "jcstate.agent.worker"
                    self.saw_in_host.add(name)
            except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
                continue  # gone meanwhile
        self.snapshots += 1


def _start_server(data: Path, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = live.free_port()
    argv = [sys.executable, "-m", "jcstate", "server", "--data", str(data)]
    argv += ["--listen", f"127.0.0.1:{port}", "--log-format", "json", "--log-level", "debug"]
    argv += ["--access-log"]
    with (logs / "server.stdout").open("wb") as out, (logs / "server.stderr").open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=SAFE_ENV)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    def up() -> bool:
        assert proc.poll() is None, (logs / "server.stderr").read_text()
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=1):
                return True
        except OSError:
            return False

    wait_for(up, 30, step=0.05)
    return proc, url


class Agent:
    """The agent in the test host, its output kept; the connect key read from a 0600 file."""

    def __init__(self, host: th.TestHost, url: str, key_file: str, logs: Path):
        self.host, self.url, self.key_file, self.logs = host, url, key_file, logs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.host.install_jcstate()
        argv = [str(Path(sys.prefix, "bin", "jcstate")), "-vv", "agent", "--server", self.url]
        argv += ["--connect-key-file", self.key_file, "--log-format", "json"]
        argv += ["--wait", "5", "--max-backoff", "1", "--replan", "1"]
        out, err = self.logs / "agent.stdout", self.logs / "agent.stderr"
        with out.open("ab") as stdout, err.open("ab") as stderr:
            command = self.host.command(argv)
            self.proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=SAFE_ENV)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(th._only_child(self.proc.pid), signal.SIGTERM)
        except Exception:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cli(url: str, token: str, *args: str, input: str | None = None) -> str:
    env = SAFE_ENV | {"JCSTATE_SERVER": url, "JCSTATE_TOKEN": token}
    proc = subprocess.run(
        [*jcstate_argv(), *args], input=input, capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _shadow_field(host: th.TestHost, user: str) -> str | None:
    for line in host.path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields[1]
    return None


def _db_rows(db_file: Path) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {}
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            found[table] = [dict(zip(names, row, strict=True)) for row in cursor]
        return found
    finally:
        conn.close()


def _admin_views(admin: AdminClient, device_ids: list[str]) -> dict[str, Any]:
    """What the read-only admin routes show (and the audit log), by route."""
    views: dict[str, Any] = {
        "GET /api/v1/devices": admin.call("GET", "/api/v1/devices"),
        "GET /api/v1/revisions": admin.call("GET", "/api/v1/revisions"),
        "GET /api/v1/totp": admin.call("GET", "/api/v1/totp"),
        "GET /api/v1/tokens": admin.call("GET", "/api/v1/tokens"),
        "GET /api/v1/commands": admin.call("GET", "/api/v1/commands"),
        "GET /api/v1/audit": admin.call("GET", "/api/v1/audit", limit="10000"),
    }
    for revision in admin.call("GET", "/api/v1/revisions"):
        route = f"/api/v1/revisions/{revision['id']}"
        views[f"GET {route}"] = admin.call("GET", route)
        views[f"GET {route}/diff"] = admin.call("GET", route + "/diff")
    for device in device_ids:
        views[f"GET /api/v1/devices/{device}"] = admin.call("GET", f"/api/v1/devices/{device}")
        views[f"GET /api/v1/devices/{device}/document"] = admin.call(
            "GET", f"/api/v1/devices/{device}/document"
        )
    return views


def _sweep_everything(
    sweep: Sweep,
    *,
    host: th.TestHost,
    data: Path,
    logs: Path,
    sampler: ProcessSampler,
    views: dict[str, Any],
) -> None:
    # logs and outputs: server, agent, admin CLI, standalone plan
    sweep.tree(logs, "logs ")
    # every file the scenario wrote inside the host: the overlay's upper directory
    assert host.workdir is not None
    upper = host.workdir / "upper"
    assert upper.is_dir(), "the test host is not an overlay: nothing to tell written files by"
    sweep.tree(upper, "host ")
    # the data directory, the SQLite files raw (free pages, WAL) included
    sweep.tree(data, "data ")
    # every row of every table
    for table, rows in _db_rows(data / "jcstate.db").items():
        sweep.rows(table, rows)
    # what the admin API shows, the audit log included
    for route, answer in views.items():
        sweep.text(json.dumps(answer), f"api {route}", "api answer")
    # process snapshots
    for argv, where in sampler.argv.items():
        sweep.bytes(argv, f"ps argv {where}", "ps argv")
    for environ, where in sampler.environ.items():
        sweep.bytes(environ, f"ps environ {where}", "ps environ")


def test_canaries_moved_end_to_end_are_found_nowhere(testhost, tmp_path):
    data, logs, device_dir = tmp_path / "data", tmp_path / "logs", tmp_path / "mac"
    logs.mkdir()
    server, url = _start_server(data, logs)
    token = (data / "admin-token").read_text().strip()
    connect_key = (data / "connect-key").read_text().strip()
    admin = AdminClient(url, token)
    sampler = ProcessSampler(testhost, server.pid)
    sampler.start()
    agent = Agent(testhost, url, "/etc/jcstate/connect-key", logs)
    canaries = {
        "password hash": "$6$cnry" + _random(CRYPT64, 8) + "$" + _random(CRYPT64, 86),
        "drift hash": "$6$drft" + _random(CRYPT64, 8) + "$" + _random(CRYPT64, 86),
        "password": "canary-pw-" + secrets.token_urlsafe(18),
        "recovery key": "-".join(
            _random(string.ascii_uppercase + "0123456789", 4) for _ in "123456"
        ),
        "admin token": token,
        "connect key": connect_key,
    }
    try:
        # the password held by the server, through the CLI (stdin), and the policy
        out = _cli(url, token, "password", "set", "alice-pw", input=canaries["password"] + "\n")
        assert "stored password alice-pw" in out
        admin.call(
            "POST", "/api/v1/revisions", {"files": {"eng.yaml": _policy(canaries["password hash"])}}
        )
        # the TOTP secret: the server makes it, the answer shows it once
        canaries["TOTP secret"] = admin.call("POST", "/api/v1/totp/alice")["secret"]
        _cli(url, token, "totp", "list")

        # the standalone plan of the same policy (with a secrets file) against the host
        secrets_file = tmp_path / "secrets.yaml"
        secrets_file.write_text(
            json.dumps(
                {
                    "passwords": {"alice-pw": canaries["password"]},
                    "totp": {"alice": canaries["TOTP secret"]},
                }
            )
        )
        secrets_file.chmod(0o600)
        policy_file = tmp_path / "eng.yaml"
        policy_file.write_text(_policy(canaries["password hash"]))
        for output in ("text", "json"):
            plan = subprocess.run(
                [*jcstate_argv(), "plan", "--root", str(testhost.root), str(policy_file)]
                + ["--secrets", str(secrets_file), "--output", output],
                capture_output=True,
                env=SAFE_ENV,
                timeout=120,
            )
            assert plan.returncode == 2, plan.stderr  # changes to make
            (logs / f"plan.{output}").write_bytes(plan.stdout + plan.stderr)
        assert b"carol" in (logs / "plan.text").read_bytes()

        # the agent: enrolls with the connect key (a 0600 file, never argv), converges
        key_file = testhost.path("/etc/jcstate/connect-key")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(connect_key + "\n")
        key_file.chmod(0o600)
        agent.start()
        wait_for(lambda: admin.call("GET", "/api/v1/devices"), 30)
        device = admin.call("GET", "/api/v1/devices")[0]["id"]
        wait_for(lambda: testhost.path("/home/alice/.google_authenticator").exists(), 60)
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device}")["lastReportOk"], 30)
        # every canary went where it should: a sweep of a scenario that lost them proves nothing
        assert _shadow_field(testhost, "carol") == canaries["password hash"]
        alice_hash = _shadow_field(testhost, "alice")
        assert alice_hash and pwmod.matches(Secret(canaries["password"]), alice_hash)
        canaries["alice's shadow hash"] = alice_hash
        totp_file = testhost.path("/home/alice/.google_authenticator").read_text()
        assert totp_file.splitlines()[0] == canaries["TOTP secret"]
        pyotp.TOTP(canaries["TOTP secret"]).now()  # a valid base32 secret

        # drift: carol's hash changed behind jcstate's back; a plan reports it, a converge fixes
        testhost.run(["chpasswd", "-e"], input=f"carol:{canaries['drift hash']}\n")
        wait_for(lambda: admin.call("GET", f"/api/v1/devices/{device}")["drift"] is True, 30)
        admin.call("POST", f"/api/v1/devices/{device}/commands/converge", {})
        wait_for(lambda: _shadow_field(testhost, "carol") == canaries["password hash"], 30)

        # a run command whose argv holds no secret
        made = admin.call(
            "POST",
            f"/api/v1/devices/{device}/commands/run",
            {"run": {"argv": ["sh", "-c", "echo ran-ok; id -u"]}},
        )
        wait_for(
            lambda: (
                admin.call("GET", f"/api/v1/commands/{made['id']}", device=device)["state"]
                == "succeeded"
            ),
            30,
            step=0.2,
        )

        # the FileVault recovery key, escrowed by a simulated Mac with a signed request
        mac = Client(url, Identity(str(device_dir)))
        answer = mac.enroll(
            connect_key,
            {
                "hostname": "mac1",
                "os": "darwin",
                "osVersion": "14.5",
                "arch": "arm64",
                "agentVersion": "test",
            },
        )
        mac.identity.save_device(answer["id"], url)
        mac.escrow(VOLUME, Secret(canaries["recovery key"]))
        mac.close()
        got = admin.call("GET", f"/api/v1/devices/{answer['id']}/recovery-key")
        assert got["key"] == canaries["recovery key"]

        wait_for(lambda: not any(testhost.path(STATE + "/outbox").glob("*.json")), 15)
        views = _admin_views(admin, [device, answer["id"]])
    finally:
        agent.stop()
        sampler.stop()
        admin.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # the logs swept are the real ones, at their most talkative
    server_log = (logs / "server.stderr").read_text()
    assert "POST /api/v1/device/escrow HTTP/1.1" in server_log, server_log[-2000:]
    agent_log = testhost.path(LOG).read_text()
    assert "enrolled as device" in agent_log and '"level": "DEBUG"' in agent_log, agent_log
    assert sampler.snapshots >= 20, sampler.snapshots
    # snapshots were taken while the agent converged: its worker and the tools it ran were seen
    assert {"jcstate.agent.worker", "chpasswd"} & sampler.saw_in_host, sampler.saw_in_host
    for table, column in SEALED:
        rows = _db_rows(data / "jcstate.db")[table]
        assert rows, f"{table} is empty: nothing was sealed"
        assert all(str(r[column]).startswith("v1:") for r in rows), (table, rows)

    sweep = Sweep([Canary(name, value) for name, value in canaries.items()])
    for canary, place, why in BY_DESIGN:
        sweep.allow(canary, place, why)
    _sweep_everything(sweep, host=testhost, data=data, logs=logs, sampler=sampler, views=views)
    assert not sweep.hits, sweep.report()
    # the by-design places were really looked at (else the allow-list would hide nothing)
    found = {(h.canary, h.place) for h in sweep.by_design}
    assert ("password hash", "host /etc/shadow") in found, found
    assert ("TOTP secret", "host /home/alice/.google_authenticator") in found, found
    assert ("connect key", "data /connect-key") in found, found

    # -- the sweeper checks itself: leaks planted in four kinds of place are found -----------
    planted = Sweep([Canary(name, value) for name, value in canaries.items()])
    for canary, place, why in BY_DESIGN:
        planted.allow(canary, place, why)
    with testhost.path(LOG).open("a") as f:  # a log line with the token, hex
        f.write(f'{{"msg": "debug {token.encode().hex()}"}}\n')
    # a report row with the recovery key inside a base64 blob (at an offset of 2 bytes)
    conn = sqlite3.connect(data / "jcstate.db")
    conn.execute(
        "UPDATE reports SET body = json_set(body, '$.planted', ?)"
        " WHERE id = (SELECT MAX(id) FROM reports)",
        (base64.b64encode(b"k=" + canaries["recovery key"].encode()).decode(),),
    )
    conn.commit()
    conn.close()
    views["GET /api/v1/audit"].append({"detail": {"x": "pre" + canaries["password"] + "post"}})
    leaker = subprocess.Popen(
        testhost.command(["sh", "-c", "sleep 30", canaries["TOTP secret"]]), env=SAFE_ENV
    )
    try:
        wait_for(
            lambda: any(canaries["TOTP secret"] in c for c in testhost.processes().values()), 10
        )
        sampler.snapshot()
    finally:
        leaker.kill()
        leaker.wait()
    _sweep_everything(planted, host=testhost, data=data, logs=logs, sampler=sampler, views=views)
    where = {(h.canary, h.place.split(" (")[0].split(" row ")[0]) for h in planted.hits}
    assert ("admin token", f"host {LOG}") in where, planted.report()
    assert ("recovery key", "db reports.body") in where, planted.report()
    assert ("password", "api GET /api/v1/audit") in where, planted.report()
    assert any(c == "TOTP secret" and p.startswith("ps argv pid") for c, p in where), where
    # and nothing else: the plants are the only hits (the ps one: nsenter and sh)
    assert {c for c, _ in where} == {"admin token", "recovery key", "password", "TOTP secret"}
    assert {(c, p) for c, p in where if not p.startswith("ps argv")} == {
        ("admin token", f"host {LOG}"),
        ("recovery key", "db reports.body"),
        ("recovery key", "data /jcstate.db"),  # the same row, in the raw SQLite file
        ("password", "api GET /api/v1/audit"),
    }, planted.report()


def test_forms_find_a_secret_buried_in_encoded_text():
    secret = Canary("x", "s3cr3t-canary-value/+$")
    for blob in (
        b"prefix" + secret.value.encode() + b"suffix",
        __import__("base64").b64encode(b"ab" + secret.value.encode() + b"zz"),
        __import__("base64").b64encode(b"a" + secret.value.encode()),
        __import__("base64").urlsafe_b64encode(secret.value.encode() + b"\n"),
        secret.value.encode().hex().encode(),
        __import__("urllib.parse").parse.quote(secret.value, safe="").encode(),
    ):
        sweep = Sweep([secret])
        sweep.bytes(b'{"k": "' + blob + b'"}', "blob", "test")
        assert len(sweep.hits) == 1, blob
    clean = Sweep([secret])
    clean.bytes(b"s3cr3t-canary-valu", "near miss", "test")
    assert clean.hits == []
