"""An example for every subcommand's ``--help`` (argparse epilogs), in one table.

One table rather than one epilog per module: the examples read as a tour of the command, and a
test walks the parser so that a subcommand without an example fails (tests/cli/test_help.py).
"""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "add_examples"]

EXAMPLES: dict[str, str] = {
    "validate": "jcstate validate policies/",
    "plan": "jcstate plan policies/ --secrets secrets.yaml   # exit 2: changes to make",
    "apply": "jcstate apply policies/ --secrets secrets.yaml",
    "verify": "jcstate verify policies/",
    "totp": "jcstate totp enroll alice",
    "totp new": "jcstate totp new alice --secrets secrets.yaml --png alice.png",
    "totp enroll": "jcstate totp enroll alice\n  jcstate totp enroll alice --rotate",
    "totp list": "jcstate totp list --output json",
    "totp remove": "jcstate totp remove alice",
    "server": "jcstate server --data /var/lib/jcstate --listen 0.0.0.0:8443 "
    "--tls-cert server.pem --tls-key server-key.pem\n"
    "  jcstate server --data /var/lib/jcstate --erase-approvals 2   # two people per erase",
    "server install": "jcstate server install --listen 0.0.0.0:8443 "
    "--tls-cert /etc/jcstate/server.pem --tls-key /etc/jcstate/server-key.pem",
    "server backup": "jcstate server backup /var/backups/jcstate-$(date +%F).tar "
    "--data /var/lib/jcstate-server",
    "server restore": "jcstate server restore jcstate-2026-12-01.tar "
    "--data /var/lib/jcstate-server",
    "init": "jcstate init policy-repo && cd policy-repo && pre-commit install",
    "schema": "jcstate schema --output .schemas",
    "server make-cert": "jcstate server make-cert --out /etc/jcstate/tls --name jcstate.example",
    "push": "jcstate push policies/ -m 'lock down ssh' --commit \"$(git rev-parse HEAD)\"\n"
    "  jcstate push policies/ --dry-run   # exit 2: devices would change\n"
    "  jcstate push policies/ --canary 5% --wait 10m --halt-on 1   # staged rollout",
    "rollout": "jcstate rollout status",
    "rollout status": "jcstate rollout status   # exit 1 when it halted",
    "rollout promote": "jcstate rollout promote --yes   # now, without waiting for the canaries",
    "rollout abort": "jcstate rollout abort -m 'sshd fails on the canaries'",
    "revisions": "jcstate revisions --limit 10",
    "revision": "jcstate revision diff 41 42",
    "revision show": "jcstate revision show 42 --files",
    "revision diff": "jcstate revision diff 41 42\n  jcstate revision diff 42   # against 41",
    "revision rollback": "jcstate revision rollback 41 --dry-run\n"
    "  jcstate revision rollback 41 --yes -m 'back to the known good ssh policy'",
    "devices": "jcstate devices --label team=eng --label site=paris --status drift\n"
    "  jcstate devices --os darwin --sort=-lastSeen --limit 50 --page 2",
    "device": "jcstate device show web1",
    "device show": "jcstate device show web1",
    "device approve": "jcstate device approve web1",
    "device converge": "jcstate device converge eng-laptop-7   # plan and apply now",
    "device revoke": "jcstate device revoke 3f2a9c0d1e4b5a69",
    "device recovery-key": "jcstate device recovery-key mac1 --all",
    "device labels": "jcstate device label web1 set team=eng   # instead of device labels",
    "device label": "jcstate device label web1 add team=eng site=paris\n"
    "  jcstate device label web1 remove site\n"
    "  jcstate device label --where team=eng add site=paris --yes",
    "command": "jcstate command restart --where team=eng --os linux --yes",
    "command lock": "jcstate command lock web1 --wait --timeout 60\n"
    "  jcstate command lock --where site=paris --yes",
    "command restart": "jcstate command restart web1 --delay 300 --message 'patching'",
    "command shutdown": "jcstate command shutdown --where lab=old --yes",
    "command erase": "jcstate command erase mac1   # type the device id back to confirm",
    "command run": "jcstate command run web1 --wait -- uname -a\n"
    "  jcstate command run --where team=eng --yes -- systemctl restart sshd\n"
    "  jcstate command run web1 --saved disk-usage --wait   # a command runner's way",
    "command update": "jcstate command update web1 --version 1.4.0",
    "elevate": "jcstate elevate eng-laptop-7 alice --for 2h --reason 'INC-4711 driver install'\n"
    "  jcstate elevate eng-laptop-7 alice --revoke",
    "command saved": "jcstate command saved list",
    "command saved add": "jcstate command saved add disk-usage --timeout 60 "
    "--description 'free space on /' -- df -h /",
    "command saved edit": "jcstate command saved edit disk-usage -- df -h / /var",
    "command saved list": "jcstate command saved list --output json",
    "command saved remove": "jcstate command saved remove disk-usage",
    "command saved assign": "jcstate command saved assign disk-usage "
    "--token-id 5b1c0e8f2d3a4b6c\n"
    "  jcstate command saved assign disk-usage --admin helpdesk-anna",
    "command saved unassign": "jcstate command saved unassign disk-usage "
    "--token-id 5b1c0e8f2d3a4b6c",
    "command show": "jcstate command show c-1a2b3c4d5e6f7a8b   # exit 1 when it failed\n"
    "  jcstate command show b-0f1e2d3c4b5a6978   # a batch",
    "command list": "jcstate command list --state failed --since 2026-12-01 | head",
    "command cancel": "jcstate command cancel c-1a2b3c4d5e6f7a8b",
    "command approve": "jcstate command list --state 'awaiting approval'\n"
    "  jcstate command approve c-1a2b3c4d5e6f7a8b   # another administrator than its asker",
    "command reject": "jcstate command reject c-1a2b3c4d5e6f7a8b --reason 'wrong laptop'",
    "token": "jcstate token create --role read-only --name grafana --expires 90d",
    "token create": "jcstate token create --role manager --name ci --expires 30d\n"
    "  jcstate token create --role command-runner --name helpdesk\n"
    "  jcstate token create --role administrator --owner alice --totp   # asks alice's password",
    "token list": "jcstate token list",
    "token revoke": "jcstate token revoke 5b1c0e8f2d3a4b6c",
    "connect-key": "jcstate connect-key create --name lab --label site=paris",
    "connect-key create": "jcstate connect-key create --name lab --label site=paris",
    "connect-key list": "jcstate connect-key list",
    "connect-key revoke": "jcstate connect-key revoke 9e8d7c6b5a493827",
    "audit": "jcstate audit --action command.erase --since 2026-12-01\n"
    "  jcstate audit --actor ci --outcome denied --output json",
    "password": "jcstate password set alice-password",
    "password set": "jcstate password set alice-password   # asks for it, never in argv",
    "release": "jcstate release push dist/jcstate-1.4.0-py3-none-any.whl",
    "release keygen": "jcstate release keygen --out /media/offline-key",
    "release sign": "jcstate release sign dist/jcstate-1.4.0-py3-none-any.whl "
    "--key /media/offline-key/release-key",
    "release push": "jcstate release push dist/jcstate-1.4.0-py3-none-any.whl   # with its .sig",
    "admin": "jcstate admin list",
    "admin add": "jcstate admin add alice --role administrator   # asks for the password",
    "admin list": "jcstate admin list --output json",
    "admin remove": "jcstate admin remove alice",
    "admin passwd": "jcstate admin passwd alice --password-stdin < new-password.txt",
    "release list": "jcstate release list",
    "release delete": "jcstate release delete 1.3.9",
    "release deploy": "jcstate release deploy 1.4.0 web1 web2\n"
    "  jcstate release deploy 1.4.0 --all",
    "agent": "jcstate agent --server https://jcstate.example:8443 --once",
    "agent install": "jcstate agent install --server https://jcstate.example:8443 "
    "--connect-key jck_…",
    "completion": "source <(jcstate completion bash)\n"
    '  jcstate completion zsh > "${fpath[1]}/_jcstate"',
}


def add_examples(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Give each (sub)parser its example as an epilog, kept as written (no re-wrapping)."""
    from jcstate.cli.completion import command_paths

    for words, sub in command_paths(parser, path):
        example = EXAMPLES.get(" ".join(words))
        if example and not sub.epilog:
            sub.epilog = "example:\n  " + example
            sub.formatter_class = _raw_epilog(sub.formatter_class)


def _raw_epilog(formatter: object) -> object:
    """The parser's formatter, printing the epilog's lines as they are."""

    def make(prog: str) -> argparse.HelpFormatter:
        base = formatter(prog)  # type: ignore[operator]

        class Raw(type(base)):  # type: ignore[misc]
            def _fill_text(self, text: str, width: int, indent: str) -> str:
                if text.startswith("example:"):
                    return "".join(indent + line for line in text.splitlines(keepends=True))
                return super()._fill_text(text, width, indent)

        raw = Raw(prog)
        raw.__dict__.update(base.__dict__)
        return raw

    return make
