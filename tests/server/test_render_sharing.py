"""Renderings are shared between devices only when their documents are provably identical."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jcstate.secret import Secret
from jcstate.server.render import Renderer, device_independent, repo_from_files

PLAIN = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: plain
vars:
  shell: /bin/bash
spec:
  users:
    - name: alice
      uid: 1501
      shell: "{{ vars.shell }}"
"""

PER_DEVICE = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: per-device
selector:
  labels: {team: web}
spec:
  users:
    - name: bob
      uid: 1502
      fullName: "Bob on {{ device.hostname }}"
"""

MFA = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: mfa
selector:
  labels: {team: sec}
spec:
  sshMfa:
    enabled: true
    users: [alice]
"""


class FakeStore:
    """Revisions and sealed secrets, counting reads."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.secret_reads = 0

    def revision(self, revision: int) -> dict[str, Any] | None:
        return {"files": self.files} if revision == 1 else None

    def sealed_secret(self, kind: str, name: str) -> str | None:
        self.secret_reads += 1
        return f"sealed:{kind}:{name}"


class FakeVault:
    def open(self, kind: str, name: str, sealed: str) -> Secret:
        return Secret(f"opened-{sealed}")


class CountingRenderer(Renderer):
    """A Renderer that counts full renderings (select, render, merge)."""

    renders = 0

    def document(self, repo: Any, device: dict[str, Any]) -> Any:
        self.renders += 1
        return super().document(repo, device)


def _device(n: int, team: str = "") -> dict[str, Any]:
    return {
        "id": f"dev-{n}",
        "hostname": f"host-{n}",
        "os": "linux",
        "os_version": "12",
        "arch": "x86_64",
        "labels": {"team": team} if team else {},
        "facts": {},
    }


def _renderer(*files: str) -> CountingRenderer:
    store = FakeStore({f"p{i}.yaml": text for i, text in enumerate(files)})
    return CountingRenderer(store, FakeVault())  # type: ignore[arg-type]


def test_policy_without_device_templates_renders_once_for_100_devices():
    renderer = _renderer(PLAIN)
    results = [renderer.for_device(_device(n), (1, 0.0)) for n in range(100)]
    assert renderer.renders == 1
    # one rendering, one etag, one prebuilt answer for all of them
    assert len({id(r) for r in results}) == 1
    assert json.loads(results[0].answer)["etag"] == results[0].etag
    assert all(r.document == results[0].document for r in results)
    assert results[0].document["spec"]["users"][0]["shell"] == "/bin/bash"


def test_device_template_renders_per_device():
    renderer = _renderer(PLAIN, PER_DEVICE)
    results = [renderer.for_device(_device(n, "web"), (1, 0.0)) for n in range(10)]
    assert renderer.renders == 10
    assert len({r.etag for r in results}) == 10  # the etag is per device
    for n, rendered in enumerate(results):
        bob = [u for u in rendered.document["spec"]["users"] if u["name"] == "bob"][0]
        assert bob["fullName"] == f"Bob on host-{n}"


def test_devices_matching_other_policies_do_not_share():
    renderer = _renderer(PLAIN, PER_DEVICE)
    plain = renderer.for_device(_device(1), (1, 0.0))
    web = renderer.for_device(_device(2, "web"), (1, 0.0))
    plain_again = renderer.for_device(_device(3), (1, 0.0))
    assert renderer.renders == 2  # device 3 shares device 1's rendering, never device 2's
    assert plain.document == plain_again.document
    assert plain.document["policies"] == ["plain"]
    assert web.document["policies"] == ["plain", "per-device"]


def test_secrets_go_only_to_devices_that_need_them():
    renderer = _renderer(PLAIN, MFA)
    sec = [renderer.for_device(_device(n, "sec"), (1, 0.0)) for n in range(5)]
    other = [renderer.for_device(_device(n + 5), (1, 0.0)) for n in range(5)]
    assert renderer.renders == 2
    assert renderer.store.secret_reads == 1
    assert all(r.secrets == {"totp": {"alice": "opened-sealed:totp:alice"}} for r in sec)
    assert all(r.secrets == {} for r in other)
    assert all(b"opened-" not in r.body for r in other)


def test_new_secrets_generation_is_not_shared_with_the_old():
    renderer = _renderer(PLAIN, MFA)
    first = renderer.for_device(_device(1, "sec"), (1, 0.0))
    second = renderer.for_device(_device(2, "sec"), (1, 1.0))
    assert renderer.renders == 2
    assert first.error is None and second.error is None
    assert first.etag != second.etag


def test_shared_etag_changes_with_what_the_document_depends_on():
    renderer = _renderer(PLAIN, MFA)
    base = renderer.etag(_device(1), (1, 0.0))
    assert renderer.etag(_device(2), (1, 0.0)) == base  # another device, same document
    assert renderer.etag(_device(1, "sec"), (1, 0.0)) != base  # another policy matches
    assert renderer.etag(_device(1), (1, 1.0)) != base  # new secrets generation
    windows = dict(_device(1), os="windows")
    assert renderer.etag(windows, (1, 0.0)) != base  # another OS
    assert renderer.etag(_device(1), (1, 0.0)) == renderer.for_device(_device(1), (1, 0.0)).etag


def test_cached_never_reads_the_database_for_secrets():
    renderer = _renderer(PLAIN, MFA)
    assert renderer.cached(_device(1, "sec"), (1, 0.0)) is None  # revision not parsed yet
    first = renderer.for_device(_device(1, "sec"), (1, 0.0))  # a worker thread's job
    reads = renderer.store.secret_reads
    assert renderer.cached(_device(2, "sec"), (1, 0.0)) is first  # shared: no new read
    assert renderer.store.secret_reads == reads
    assert renderer.cached(_device(3, "sec"), (1, 1.0)) is None  # new generation needs a read


def test_body_is_the_json_of_the_rendering():
    renderer = _renderer(PLAIN)
    rendered = renderer.for_device(_device(1), (1, 0.0))
    members = json.loads(b"{" + rendered.body + b"}")
    assert members == {
        "revision": 1,
        "document": rendered.document,
        "secrets": {},
        "error": None,
    }


@pytest.mark.parametrize(
    ("template", "independent"),
    [
        ("{{ vars.shell }}", True),
        ("{{ vars.shell | upper }}", True),
        ("{{ device.hostname }}", False),
        ("{{ facts.cpu }}", False),
        ("{% set d = device %}{{ d.id }}", False),
        ("{{ self }}", False),  # any name but vars is taken as device-dependent
        ("{{ vars['device'] }}", False),  # mentions the word: conservative
        ("{{ unclosed", False),
    ],
)
def test_device_independent(template, independent):
    class P:
        spec = {"users": [{"name": "a", "shell": template}]}

    assert device_independent(P()) is independent


def test_repo_from_files_parses_the_fixtures():
    # guards the fixtures above: a schema change would otherwise make the tests vacuous
    assert [p.name for p in repo_from_files({"a.yaml": PLAIN, "b.yaml": MFA}).policies] == [
        "plain",
        "mfa",
    ]


SELECTED = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: {name}
selector: {selector}
spec:
  groups:
    - {{name: g{n}, gid: {gid}}}
"""

_SELECTORS = [
    "{}",
    "{os: [linux]}",
    "{os: [darwin]}",
    "{labels: {team: web}}",
    "{labels: {team: web, site: par}}",
    "{hostnames: ['web*', DB-1]}",
    "{devices: [dev-1, dev-3]}",
    "{os: [linux], labels: {site: par}, hostnames: ['*-2']}",
]


@pytest.mark.parametrize("chosen", [[0], [1, 2], [3, 4], [5], [6], [0, 3, 5, 6, 7], [2, 7]])
def test_memoised_selection_matches_the_selectors(chosen: list[int]) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from jcstate.server.render import _Sharing, device_of

    files = [
        SELECTED.format(name=f"p{i}", selector=_SELECTORS[i], n=i, gid=3000 + i) for i in chosen
    ]
    repo = repo_from_files({f"p{i}.yaml": text for i, text in enumerate(files)})
    sharing = _Sharing(repo.policies)
    devices = st.fixed_dictionaries(
        {
            "id": st.sampled_from(["dev-1", "dev-2", "dev-3"]),
            "hostname": st.sampled_from(["web-1", "WEB-2", "db-1", "mail-2"]),
            "os": st.sampled_from(["linux", "darwin", "windows"]),
            "os_version": st.just("12"),
            "arch": st.just("x86_64"),
            "labels": st.none()
            | st.dictionaries(
                st.sampled_from(["team", "site", "other"]), st.sampled_from(["web", "par", "x"])
            ),
        }
    )

    @settings(max_examples=300, deadline=None)
    @given(st.lists(devices, min_size=1, max_size=20))
    def check(seen: list[dict[str, Any]]) -> None:
        for device in seen:  # in any order, with repeats: the memo never answers for another
            target = device_of(device)
            expected = tuple(i for i, p in enumerate(repo.policies) if p.matches(target))
            assert sharing.matched(device) == expected

    check()
