"""Which address a trainer advertises in the registry: one that the gateway on another machine can reach.

Listening on all interfaces, the hostname is no answer (Debian maps it to 127.0.1.1) and neither is any
loopback address; the address of the interface that routes towards Redis is (the gateway shares that Redis,
so it sits on a network that reaches it), else the first non-loopback interface address."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import psutil

ALL_INTERFACES = ("0.0.0.0", "::", "[::]", "")


class NoReachableAddress(ValueError):
    pass


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def route_source(host: str, port: int) -> str:
    """The local address the kernel would send from to reach host:port ('' if there is no route).
    A UDP connect sends nothing; it only picks the route."""
    try:
        family, _, _, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(target)
            return probe.getsockname()[0]
    except OSError:
        return ""


def interface_addresses() -> list[str]:
    """Non-loopback IPv4 addresses of interfaces that are up."""
    stats = psutil.net_if_stats()
    out = []
    for name, addresses in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        out += [a.address for a in addresses if a.family == socket.AF_INET and not is_loopback(a.address)]
    return out


def advertised_host(listen_host: str, redis_url: str) -> str:
    """The host part to advertise for a server bound to listen_host."""
    if listen_host not in ALL_INTERFACES:
        return listen_host
    parts = urlsplit(redis_url)
    if parts.hostname:
        source = route_source(parts.hostname, parts.port or 6379)
        if source and not is_loopback(source):
            return source
    for address in interface_addresses():
        return address
    raise NoReachableAddress(
        "listening on all interfaces but this machine has no non-loopback address to advertise; "
        "pass --advertise HOST:PORT (PEFTLAB_TRAINER_ADVERTISE)"
    )


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
