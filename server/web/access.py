"""Who is a researcher: the token (a Bearer header, or the session cookie it signs in to), or, only with
`--trust-loopback`, a request from this machine that no proxy forwarded."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time


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


# --- the researcher's credential (issue 19) ------------------------------------------------------------------------
#
# Every researcher route (the monitor, its API, downloads, replays and their audio) needs one of: the token as
# `Authorization: Bearer <token>` (scripts), or the session cookie the token signs in to (browsers: `/admin?token=...`
# once, or the sign-in form). Requests from this machine get in without it only with `--trust-loopback`, and then
# only when no proxy reports another client: behind ssh -R, socat or stunnel every remote request comes from
# 127.0.0.1.

#: The session cookie's name (the participants' own cookie is `atari_session`).
COOKIE = "atari_researcher"
#: How long a sign-in lasts.
SESSION_MAX_AGE_S = 7 * 24 * 3600
#: Paths behind the researcher's credential: every route a researcher uses, and nothing a participant needs.
RESEARCHER_PREFIXES = ("/admin", "/api/admin/", "/api/monitor", "/api/trajectories", "/replay/", "/api/replay/")


def is_researcher_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/") or path.startswith(RESEARCHER_PREFIXES[1:])


def token_matches(want: str, got: str | None) -> bool:
    return bool(want) and bool(got) and hmac.compare_digest(str(got).encode(), want.encode())


def _session_mac(token: str, issued: int) -> str:
    return hmac.new(token.encode(), f"researcher-session:{issued}".encode(), hashlib.sha256).hexdigest()


def session_cookie_value(token: str, now: float | None = None) -> str:
    """`<issued>.<HMAC of it under the token>`: no server state, so every process with the same token accepts it (a
    study behind nginx), and a new token signs everyone out."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_session_mac(token, issued)}"


def session_cookie_ok(token: str, value: str | None, now: float | None = None) -> bool:
    if not token or not value or "." not in value:
        return False
    issued_s, _, mac = value.partition(".")
    if not issued_s.isdigit():
        return False
    issued = int(issued_s)
    age = (time.time() if now is None else now) - issued
    return -60 <= age <= SESSION_MAX_AGE_S and hmac.compare_digest(mac, _session_mac(token, issued))


def bearer(headers) -> str | None:
    auth = headers.get("Authorization", "")
    return auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None


def has_credential(settings, request) -> bool:
    """The request carries the researcher's credential (Bearer header or session cookie), or comes from this machine
    under `--trust-loopback`. A `?token=` in the URL is not a credential here: it only signs in (`sign_in_redirect`)."""
    token = getattr(settings, "researcher_token", "")
    if token_matches(token, bearer(request.headers)):
        return True
    if session_cookie_ok(token, request.cookies.get(COOKIE)):
        return True
    return bool(getattr(settings, "trust_loopback", False)) and request_is_local(request.remote_addr, request.headers)


def request_is_tls(settings, request) -> bool:
    """HTTPS to this server, or to a trusted reverse proxy that says so (X-Forwarded-Proto from an address in
    `--trusted-proxy`; anyone else could send that header)."""
    if request.is_secure:
        return True
    proxies = getattr(settings, "trusted_proxies", ()) or ()
    if request.remote_addr in proxies:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def set_session_cookie(resp, settings, request) -> None:
    resp.set_cookie(
        COOKIE,
        session_cookie_value(settings.researcher_token),
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request_is_tls(settings, request),
    )


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site: `//host` and `/\\host` are refused)."""
    if not target or not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return "/admin"
    return target
