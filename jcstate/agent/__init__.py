"""The jcstate agent: enroll once, long-poll for work, converge, report.

- ``identity.py`` the device's own Ed25519 key pair and id, kept 0600 in the state directory
- ``signing.py``  the request-signature scheme (shared, as data, with the server's verifier)
- ``client.py``   a small HTTP client (standard library only) that signs every request
- ``outbox.py``   reports kept on disk until the server acknowledges them
- ``loop.py``     the agent loop: lock, enroll, poll, plan, apply, report, back off
- ``install.py``  ``jcstate agent install``: version.txt and a systemd unit

The agent imports nothing of ``jcstate.server`` and keeps its imports small: it runs on every
device, idle most of the time.
"""
