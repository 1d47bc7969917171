"""The SSRF guard: webhooks may only reach public addresses, unless an operator allowlists a
network (``INFRAFLOW_WEBHOOKS__ALLOW_NETWORKS``).

Refused: loopback, private (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254),
shared (100.64/10), multicast, reserved, unspecified and every other non-global address,
including IPv4-mapped IPv6 forms of them. A host name is resolved and *every* address it
resolves to must pass, at registration and again at each delivery (DNS may change), and the
delivery then connects to the checked address itself, so a second lookup cannot swap it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit

from infraflow.common.errors import InfraflowError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_UNRESOLVABLE: Final = "the webhook destination's host does not resolve"


class DestinationBlockedError(InfraflowError):
    """The destination is not allowed (a non-public address that is not allowlisted)."""

    code = "DESTINATION_BLOCKED"


class DestinationUnresolvableError(InfraflowError):
    """The destination's host name did not resolve."""

    code = "DESTINATION_UNRESOLVABLE"
    retryable = True


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: where to connect, and the URL's own host for Host/SNI."""

    url: SplitResult
    host: str
    port: int
    address: IpAddress


def url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's form (not its address), or None."""
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url):
        return f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters, without spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "must be a valid http:// or https:// URL"
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user or password (the signature authenticates deliveries)"
    if parts.fragment:
        return "must not have a #fragment"
    if port == 0:
        return "must not use port 0"
    return None


class DestinationGuard:
    """Checks addresses against the public-only rule and the operator's allowlist."""

    def __init__(self, allow_networks: Iterable[str] = (), *, allow_public: bool = True) -> None:
        self._allowed: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow_networks
        )
        self._allow_public = allow_public

    def refusal(self, address: IpAddress) -> str | None:
        """Why ``address`` may not be reached, or None if it may."""
        plain = _unmapped(address)
        if any(plain in net for net in self._allowed):
            return None
        kind = _kind(plain)
        if kind is None and not self._allow_public:
            return "resolves to an address outside the allowlisted networks"
        return None if kind is None else f"resolves to a {kind} address"

    async def resolve(self, url: str) -> Target:
        """Resolve the URL's host and check every address; the first one is the target."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
        addresses = await _addresses(host, port)
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                raise DestinationBlockedError(f"the webhook destination {reason}")
        return Target(url=parts, host=host, port=port, address=addresses[0])


def _kind(address: IpAddress) -> str | None:
    """The category that makes ``address`` non-public, or None for a global unicast one."""
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    return None if address.is_global else "non-public"


def _unmapped(address: IpAddress) -> IpAddress:
    """The IPv4 address inside an IPv4-mapped or 6to4/NAT64-free IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
    return address


async def _addresses(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` stands for (an IP literal stands for itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), 5.0
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise DestinationUnresolvableError(
            "the webhook destination's host does not resolve"
        ) from exc
    out: list[IpAddress] = []
    for info in infos:
        literal = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(literal)
        if address not in out:
            out.append(address)
    if not out:
        raise DestinationUnresolvableError(_UNRESOLVABLE)
    return out
