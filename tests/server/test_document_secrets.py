"""``GET /api/v1/devices/{ref}/document`` shows a policy's password hash as ``(secret)``.

The canary sweep (tests/e2e/test_canary_sweep.py) found the hash in this route's answer; the
policy repo itself (``GET /api/v1/revisions/{n}``) still holds it, by design.
"""

from __future__ import annotations

import json

HASH = "$6$docSalt0$" + "Qw3rTy7uIo9p" * 7 + "Zx"
POLICY = f"""\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: eng}}
selector: {{os: [linux]}}
spec:
  users:
    - {{name: carol, uid: 1602, password: {{hash: "{HASH}"}}}}
    - {{name: dave, uid: 1603, password: {{secretRef: dave-pw}}}}
"""


def test_the_document_route_hides_password_hashes(sqlite_server):
    server = sqlite_server
    _, device_id = server.device("web1")
    admin = server.admin("read-only")
    server.admin().call("POST", "/api/v1/revisions", {"files": {"eng.yaml": POLICY}})
    shown = admin.call("GET", f"/api/v1/devices/{device_id}/document")
    assert HASH not in json.dumps(shown)
    users = {u["name"]: u for u in shown["document"]["spec"]["users"]}
    assert users["carol"]["password"] == {"hash": "(secret)"}
    assert users["dave"]["password"] == {"secretRef": "dave-pw"}  # a name, not a secret
    # the device itself still gets the hash it must set
    client, _ = server.device("web2")
    work = client.work("", 0)
    assert {u["name"]: u for u in work["document"]["spec"]["users"]}["carol"]["password"] == {
        "hash": HASH
    }
