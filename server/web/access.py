"""Who may see replays: the researcher token, or a request from this machine that no proxy forwarded."""

from __future__ import annotations

import ipaddress


def is_loopback(addr: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1); False for anything else or garbage."""
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _strip_port(addr: str) -> str:
    addr = addr.strip().strip('"')
    if addr.startswith("["):  # [v6]:port
        return addr[1:].split("]", 1)[0]
    if addr.count(":") == 1:  # v4:port
        return addr.split(":", 1)[0]
    return addr


def forwarded_addrs(headers) -> list[str]:
    """Client addresses a proxy in front of us reports (X-Forwarded-For, X-Real-IP, RFC 7239 Forwarded)."""
    addrs = []
    for name in ("X-Forwarded-For", "X-Real-IP"):
        for value in headers.getlist(name):
            addrs += [_strip_port(a) for a in value.split(",") if a.strip()]
    for value in headers.getlist("Forwarded"):
        for element in value.split(","):
            for pair in element.split(";"):
                key, _, val = pair.strip().partition("=")
                if key.strip().lower() == "for":
                    addrs.append(_strip_port(val))
    return addrs


def request_is_local(remote_addr: str | None, headers) -> bool:
    """The peer is loopback, and so is every client address a proxy reports: behind a reverse proxy on this host
    (deploy/nginx.conf) every peer is 127.0.0.1, so the forwarded addresses decide. A client cannot talk its way in
    with a forged header: a proxy appends the real address, and without a proxy a header only narrows access."""
    return is_loopback(remote_addr) and all(is_loopback(a) for a in forwarded_addrs(headers))
