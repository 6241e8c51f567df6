"""The jcstate agent: enroll once, long-poll for work, converge, report.

- ``identity.py`` the device's own Ed25519 key pair and id, kept 0600 in the state directory
- ``sodium.py``   the three libsodium calls the agent makes (key pair, signature, SHA-256)
- ``signing.py``  the request-signature scheme (shared, as data, with the server's verifier)
- ``client.py``   a small HTTP client (standard library only) that signs every request
- ``connection.py`` one kept-alive HTTP/1.1 connection on ``socket`` and ``ssl``
- ``outbox.py``   reports kept on disk until the server acknowledges them
- ``logs.py``     the agent's log file, written without importing ``logging``
- ``loop.py``     the agent loop: lock, enroll, poll, converge (in a worker), report, back off
- ``spawn.py``    the worker's process, started and talked to without ``subprocess``
- ``worker.py``   one converge (or the enrollment facts) in a short-lived process of its own
- ``install.py``  ``jcstate agent install``: version.txt and a systemd unit
- ``update.py``   self-update: a release installed beside the running one, switched to, re-exec
- ``wheel.py``    what a release is (a pure-Python wheel of jcstate), checked here and on upload

The agent imports nothing of ``jcstate.server`` and keeps its imports small: it runs on every
device, idle most of the time. The engine, documents and resource modules load in the worker
only, and the resident process does without ``http.client``, ``logging``, ``subprocess``,
argparse and ``nacl.signing`` (docs/agent.md, "Memory and imports").
"""
