"""The jcstate agent: enroll once, long-poll for work, converge, report.

- ``identity.py`` the device's own Ed25519 key pair and id, kept 0600 in the state directory
- ``signing.py``  the request-signature scheme (shared, as data, with the server's verifier)
- ``client.py``   a small HTTP client (standard library only) that signs every request
- ``outbox.py``   reports kept on disk until the server acknowledges them
- ``loop.py``     the agent loop: lock, enroll, poll, converge (in a worker), report, back off
- ``worker.py``   one converge (or the enrollment facts) in a short-lived process of its own
- ``install.py``  ``jcstate agent install``: version.txt and a systemd unit
- ``update.py``   self-update: a release installed beside the running one, switched to, re-exec
- ``wheel.py``    what a release is (a pure-Python wheel of jcstate), checked here and on upload

The agent imports nothing of ``jcstate.server`` and keeps its imports small: it runs on every
device, idle most of the time. The engine, documents and resource modules load in the worker
only (docs/agent.md, "Memory and imports").
"""
