"""Benchmark: validate a generated repo of 1,000 policy documents.

Each document is realistic: a selector (OS + a team label), vars, two groups with authoritative
members, three users (uid, shell template, groups, keys, expiry) and, on some, SSH MFA or a
command. Prints the wall time of ``validate_paths`` in-process and of ``jcstate validate`` as a
separate process (which includes interpreter start-up and imports).

    .venv/bin/python bench/validate.py [--documents 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: team-{n}
  description: Workstations of team {n}
selector:
  os: [linux]
  labels: {{team: t{n}}}
vars:
  shell: /bin/bash
  home_root: /home
spec:
  groups:
    - name: t{n}-dev
      gid: {gid}
      members: [u{n}a, u{n}b, u{n}c]
    - name: t{n}-ops
      gid: {gid1}
      members: [u{n}a]
  users:
    - name: u{n}a
      uid: {uid}
      fullName: User {n} A
      shell: "{{{{ vars.shell }}}}"
      home: "{{{{ vars.home_root }}}}/u{n}a"
      groups: [t{n}-dev, t{n}-ops]
      admin: true
      password:
        hash: "$6$salt{n}$abcdefghijklmnopqrstuvwxyz0123456789"
      sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n:08d} u{n}a@laptop"]
      expires: 2027-06-30
    - name: u{n}b
      uid: {uid1}
      fullName: "User {n} B on {{{{ device.hostname }}}}"
      shell: "{{{{ vars.shell }}}}"
      groups: [t{n}-dev]
    - name: u{n}c
      uid: {uid2}
      shell: /bin/sh
      groups: [t{n}-dev]
      state: locked
  sshMfa:
    enabled: true
    users: [u{n}a]
{extra}"""

COMMAND = """\
  commands:
    - id: rotate-logs-{n}
      action: run
      run: {{argv: [logrotate, -f, /etc/logrotate.conf], timeout: 300}}
"""


def generate(folder: str, count: int) -> None:
    """Write ``count`` policy files into ``folder`` (10 per sub-folder, like a real repo)."""
    for n in range(count):
        sub = os.path.join(folder, f"teams-{n // 10:03d}")
        os.makedirs(sub, exist_ok=True)
        text = POLICY.format(
            n=n,
            gid=10000 + 2 * n,
            gid1=10001 + 2 * n,
            uid=20000 + 3 * n,
            uid1=20001 + 3 * n,
            uid2=20002 + 3 * n,
            extra=COMMAND.format(n=n) if n % 5 == 0 else "",
        )
        with open(os.path.join(sub, f"team-{n}.yaml"), "w", encoding="utf-8") as f:
            f.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--keep", help="write the repo here and keep it")
    args = parser.parse_args()

    from jcstate.document import validate_paths

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        generate(folder, args.documents)
        size = sum(
            os.path.getsize(os.path.join(top, f)) for top, _, fs in os.walk(folder) for f in fs
        )
        start, cpu = time.perf_counter(), time.process_time()
        repo, problems = validate_paths([folder])
        in_process, in_process_cpu = time.perf_counter() - start, time.process_time() - cpu
        if repo is None:
            print("\n".join(str(p) for p in problems[:20]), file=sys.stderr)
            return 1

        jcstate = os.path.join(os.path.dirname(sys.executable), "jcstate")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([jcstate, "validate", folder], capture_output=True, text=True)
        as_process = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        process_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(f"documents: {args.documents} ({size / 1024:.0f} KiB)")
        # CPU time next to wall time: on a busy machine the wall time mostly measures the load.
        print(f"validate_paths: {in_process:.3f} s wall, {in_process_cpu:.3f} s CPU")
        print(
            f"jcstate validate (process): {as_process:.3f} s wall, {process_cpu:.3f} s CPU"
            f" -> {proc.stdout.strip()}"
        )
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
