"""``jcstate init DIR``: scaffold a policy repo for GitOps.

What it writes (relative to DIR), and why each file is there:

- ``policies/example.yaml``: a commented policy that validates as written, with the
  ``yaml-language-server`` line that points editors at ``schemas/policy.schema.json``;
- ``schemas/*.schema.json``: the schemas of this jcstate version (``jcstate schema --output
  schemas`` refreshes them after an upgrade), so editors need no network;
- ``.pre-commit-config.yaml``: ``jcstate validate`` before every commit (pre-commit);
- ``.github/workflows/jcstate.yml`` and ``.gitlab-ci.yml``: validate every change, show
  ``jcstate push --dry-run`` on a pull/merge request, push from the main branch;
- ``README.md``: how the repo works.

The scaffold never overwrites: if any of those files exists, nothing is written and the error
names them. DIR itself may exist (a fresh ``git init``, say).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from jcstate import __version__
from jcstate.errors import JcstateError

__all__ = ["register", "scaffold", "scaffold_files"]

POLICY_DIR = "policies"
SCHEMA_DIR = "schemas"


def register(sub: Any) -> None:
    helptext = "scaffold a policy repo: example policy, schemas, pre-commit hook, CI examples"
    p = sub.add_parser(
        "init",
        help=helptext,
        description=helptext + ". Refuses to overwrite any file (nothing is written then).",
    )
    p.add_argument("dir", metavar="DIR", help="the repo's folder (created if missing)")
    p.add_argument(
        "--hook-repo",
        metavar="URL",
        help="git URL (or path) of jcstate's repository for the pre-commit hook; without it the "
        "hook runs the jcstate installed on the machine (pre-commit's `repo: local`)",
    )
    p.add_argument(
        "--hook-rev",
        metavar="REV",
        help=f"tag or commit of --hook-repo (default v{__version__})",
    )
    p.set_defaults(handler=_run)


def scaffold_files(hook_repo: str | None = None, hook_rev: str | None = None) -> dict[str, str]:
    """The scaffold's text files (schemas aside), by path relative to the repo."""
    if hook_repo:
        hook = _PRECOMMIT_REMOTE.format(
            repo=_yaml_str(hook_repo), rev=hook_rev or f"v{__version__}"
        )
    else:
        hook = _PRECOMMIT_LOCAL
    pin = f"jcstate=={__version__}"
    return {
        "README.md": _README,
        f"{POLICY_DIR}/example.yaml": _EXAMPLE,
        ".pre-commit-config.yaml": hook,
        ".github/workflows/jcstate.yml": _GITHUB.replace("@PIN@", pin),
        ".gitlab-ci.yml": _GITLAB.replace("@PIN@", pin),
    }


def scaffold(folder: str, hook_repo: str | None = None, hook_rev: str | None = None) -> list[str]:
    """Write the scaffold into ``folder``; returns the paths written (relative).

    Raises JcstateError, having written nothing, if any of the files already exists.
    """
    from jcstate.cli.schema import schema_files

    files: dict[str, bytes] = {
        path: text.encode() for path, text in scaffold_files(hook_repo, hook_rev).items()
    }
    for name, data in schema_files().items():
        files[f"{SCHEMA_DIR}/{name}"] = data
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise JcstateError(f"{folder}: exists and is not a folder; nothing was written")
    taken = sorted(p for p in files if os.path.lexists(os.path.join(folder, p)))
    if taken:
        named = ", ".join(taken[:4]) + (f" and {len(taken) - 4} more" if len(taken) > 4 else "")
        raise JcstateError(
            f"{folder}: {named} already exist{'s' if len(taken) == 1 else ''}; "
            "nothing was written (move them away, or scaffold into an empty folder)"
        )
    written = []
    for path, data in files.items():
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "xb") as f:  # "x": never replaces a file created meanwhile
            f.write(data)
        written.append(path)
    return written


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    import json

    return json.dumps(value)


def _run(args: argparse.Namespace) -> int:
    if args.hook_rev and not args.hook_repo:
        raise JcstateError("--hook-rev needs --hook-repo")
    try:
        written = scaffold(args.dir, args.hook_repo, args.hook_rev)
    except OSError as exc:
        raise JcstateError(f"cannot scaffold {args.dir}: {exc}") from exc
    for path in written:
        if not path.startswith(f"{SCHEMA_DIR}/"):
            print(os.path.join(args.dir, path))
    print(os.path.join(args.dir, SCHEMA_DIR, "*.schema.json"))
    print(
        f"policy repo scaffolded in {args.dir}. Next: cd {args.dir} && git init && "
        f"pre-commit install && jcstate validate {POLICY_DIR}"
    )
    return 0


_EXAMPLE = """\
# yaml-language-server: $schema=../schemas/policy.schema.json
# The line above gives editors with a YAML language server (VS Code's YAML extension, for one)
# completion and checks from the schema; `jcstate schema --output schemas` refreshes schemas/.
#
# One policy per document; every .yaml file under policies/ is read. Check with:
#   jcstate validate policies         (file:line:col: message for every problem)
#   jcstate plan policies             (what would change on this machine, read-only)
# Reference: the jcstate documentation, docs/documents.md.
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: example-linux              # unique in the repo: lower case, digits, '-'
  description: An example team group and one user on Linux machines
selector:                          # every condition given must hold; omit one to admit all
  os: [linux]                      # linux | darwin | windows
  # labels: {team: eng}            # device labels, set at enrollment or by an admin
  # hostnames: ["eng-*"]           # shell-style globs
vars:
  shell: /bin/bash
spec:
  groups:
    - name: example-team
      gid: 4100                    # optional; omitted: the OS allocates one
      members: [example-user]      # when given, the exact membership
  users:
    - name: example-user
      fullName: Example User
      shell: "{{ vars.shell }}"    # Jinja2 in string values: vars, device, facts
      groups: [example-team]
      # admin: true                # sudo on Linux, admin on macOS, Administrators on Windows
      # password:
      #   secretRef: example-user-password   # held by the server, never in the repo
      # sshAuthorizedKeys: ["ssh-ed25519 AAAA... example@laptop"]
      state: present               # present | absent | locked
"""

_README = """\
# Device policies

Policies for jcstate, kept in git. Every `*.yaml` under `policies/` is one or more policy
documents; `schemas/` holds the JSON Schemas for editors.

    jcstate validate policies        # before committing (the pre-commit hook runs it too)
    jcstate plan policies            # what would change on this machine (read-only)
    jcstate push --dry-run policies  # per device, what a push would change
    jcstate push policies --message "..." --commit "$(git rev-parse HEAD)"

Set up the pre-commit hook once per clone: `pip install pre-commit && pre-commit install`.

CI (`.github/workflows/jcstate.yml`, `.gitlab-ci.yml`) validates every change; on a pull or
merge request it shows `jcstate push --dry-run` (the blast radius, per device); on the main
branch it pushes the policies as a new revision, with the commit's message and id. It needs two
CI secrets: `JCSTATE_SERVER` (the server's URL) and `JCSTATE_TOKEN` (an API token with the
`manager` role; create one with `jcstate token create --role manager`). With a private CA, add
`JCSTATE_CA_FILE` (a file variable holding the CA certificate).
"""

_PRECOMMIT_LOCAL = """\
# pre-commit (https://pre-commit.com): `jcstate validate` before every commit.
# Set up once per clone: pip install pre-commit && pre-commit install
# This hook runs the jcstate installed on the machine (on PATH). To let pre-commit install
# jcstate itself, use jcstate's repository instead (it ships a jcstate-validate hook):
#   - repo: <jcstate's git URL>
#     rev: <a release tag>
#     hooks:
#       - id: jcstate-validate
repos:
  - repo: local
    hooks:
      - id: jcstate-validate
        name: jcstate validate
        entry: jcstate validate
        language: system
        # The rules span files (duplicate names, conflicts between policies): the whole
        # folder is checked whenever a YAML file changes, not only the staged files.
        args: [policies]
        pass_filenames: false
        files: \\.ya?ml$
"""

_PRECOMMIT_REMOTE = """\
# pre-commit (https://pre-commit.com): `jcstate validate` before every commit.
# Set up once per clone: pip install pre-commit && pre-commit install
# pre-commit installs jcstate from the repository below into a virtualenv of its own.
repos:
  - repo: {repo}
    rev: {rev}
    hooks:
      - id: jcstate-validate
        args: [policies]          # the folder to check (the whole folder, on any YAML change)
"""

_GITHUB = """\
# jcstate: validate every change; on a pull request, show what a push would change on each
# device (in the job summary); on the main branch, push the policies as a new revision.
# Repository secrets: JCSTATE_SERVER (the server's URL) and JCSTATE_TOKEN (role manager).
# Pull requests from forks get no secrets: their dry run is skipped.
name: jcstate
on:
  push:
  pull_request:

permissions:
  contents: read

jobs:
  validate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "@PIN@"
      - run: jcstate validate policies

  dry-run:
    if: >-
      github.event_name == 'pull_request' &&
      github.event.pull_request.head.repo.full_name == github.repository
    needs: validate
    runs-on: ubuntu-latest
    env:
      JCSTATE_SERVER: ${{ secrets.JCSTATE_SERVER }}
      JCSTATE_TOKEN: ${{ secrets.JCSTATE_TOKEN }}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "@PIN@"
      - name: jcstate push --dry-run
        run: |
          set -o pipefail
          jcstate push --dry-run policies | tee dry-run.txt
          {
            echo "### jcstate push --dry-run"
            echo '```'
            cat dry-run.txt
            echo '```'
          } >> "$GITHUB_STEP_SUMMARY"

  push:
    if: github.event_name == 'push' && github.ref == 'refs/heads/main'
    needs: validate
    runs-on: ubuntu-latest
    concurrency: jcstate-push      # one push at a time, in commit order
    env:
      JCSTATE_SERVER: ${{ secrets.JCSTATE_SERVER }}
      JCSTATE_TOKEN: ${{ secrets.JCSTATE_TOKEN }}
      # Through the environment, never pasted into the script: a message is not shell code.
      MESSAGE: ${{ github.event.head_commit.message }}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "@PIN@"
      - run: jcstate push policies --message "$MESSAGE" --commit "$GITHUB_SHA"
"""

_GITLAB = """\
# jcstate: validate every change; on a merge request, show what a push would change on each
# device (the job log, and dry-run.txt linked from the merge request as "jcstate dry run");
# on the default branch, push the policies as a new revision.
# CI/CD variables (masked, protected for the push): JCSTATE_SERVER (the server's URL) and
# JCSTATE_TOKEN (role manager).
default:
  image: python:3.11-slim
  before_script:
    - pip install "@PIN@"

stages: [validate, deploy]

validate:
  stage: validate
  script:
    - jcstate validate policies
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_COMMIT_BRANCH

dry-run:
  stage: deploy
  script:
    - jcstate push --dry-run policies | tee dry-run.txt
  artifacts:
    expose_as: jcstate dry run
    paths: [dry-run.txt]
    when: always
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"

push:
  stage: deploy
  resource_group: jcstate-push     # one push at a time
  script:
    - jcstate push policies --message "$CI_COMMIT_TITLE" --commit "$CI_COMMIT_SHA"
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $CI_PIPELINE_SOURCE == "push"
"""
