"""Who is calling: the one place the server decides a request's client address and scheme.

Behind a reverse proxy the TCP peer is the proxy, and the client's address arrives in
``X-Forwarded-For`` (and the scheme it used in ``X-Forwarded-Proto``). Anyone can send those
headers, so they are believed only when the TCP peer is inside a ``--trusted-proxy`` network;
from any other peer they are ignored and the peer's own address is the client's. The address
list is walked from the right (the entry the nearest proxy appended) and the first address that
is not itself a trusted proxy is the client: whatever a client wrote at the left of the header
cannot win.

:func:`resolve` runs once per request in :class:`~jcstate.server.app.App`, before FastAPI and
the raw long poll: it rewrites the ASGI scope's ``client`` and ``scheme`` so that every reader
(``request.client``, uvicorn's access log) sees the same answer, and keeps the address in a
context variable that the audit log reads (:meth:`~jcstate.server.store.Store.audit`), also
from the worker threads FastAPI runs sync routes in (they copy the context).
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Iterable
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["TrustedProxies", "client_address", "current_address", "resolve"]

# the client address of the request being served (None outside a request)
current_address: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jcstate_client_address", default=None
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The networks whose ``X-Forwarded-*`` headers are believed (``--trusted-proxy CIDR``)."""

    def __init__(self, cidrs: Iterable[str] = ()):
        networks: list[Network] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise JcstateError(
                    f"--trusted-proxy {cidr!r}: not an address or network "
                    "(give e.g. 127.0.0.1/32 or 10.0.0.0/8)"
                ) from None
        self.networks = tuple(networks)
        # address -> trusted (None: not an address). Parsing one costs ~15 µs, and a server
        # sees few distinct peers (its proxies): all but the first request from each is a
        # dictionary lookup.
        self._known: dict[str, bool | None] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: str) -> bool:
        return self.classify(address) is True

    def classify(self, address: str) -> bool | None:
        """Whether ``address`` is in a trusted network; None when it is not an address."""
        try:
            return self._known[address]
        except KeyError:
            pass
        known = self._check(address)
        if len(self._known) >= 4096:  # many distinct clients: don't grow without bound
            self._known.clear()
        self._known[address] = known
        return known

    def _check(self, address: str) -> bool | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


def _header(scope: Any, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k == name]
    if not values:
        return None
    return ",".join(v.decode("latin-1") for v in values)


def client_address(scope: Any, trusted: TrustedProxies) -> tuple[str, str]:
    """(client address, scheme) of an ASGI request, believing forwarded headers only from a
    trusted proxy."""
    client = scope.get("client")
    peer = client[0] if client else ""
    scheme = scope.get("scheme", "http")
    if not trusted or peer not in trusted:
        return peer, scheme
    forwarded = _header(scope, b"x-forwarded-for")
    address = peer
    if forwarded:
        for hop in reversed([h.strip() for h in forwarded.split(",")]):
            trusted_hop = trusted.classify(hop)
            if trusted_hop is None:
                break  # garbage: stop at the last address we could read
            address = hop
            if not trusted_hop:
                break
    proto = _header(scope, b"x-forwarded-proto")
    if proto:
        last = proto.split(",")[-1].strip().lower()
        if last in ("http", "https"):
            scheme = last
    return address, scheme


def resolve(scope: Any, trusted: TrustedProxies) -> str:
    """Set the scope's client and scheme to what :func:`client_address` decides, and the
    context's :data:`current_address`. Returns the address."""
    if trusted:
        address, scheme = client_address(scope, trusted)
        client = scope.get("client")
        if client is None or client[0] != address:
            scope["client"] = (address, 0)
        scope["scheme"] = scheme
    else:  # the common case, on every request: no header is read at all
        client = scope.get("client")
        address = client[0] if client else ""
    current_address.set(address)
    return address
