"""The HTTP API: ``device`` routes (signed by a device key) and ``admin`` routes (bearer token)."""
