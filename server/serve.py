"""Run the WSGI server for an async mode on a listening socket with TCP_NODELAY.

Without TCP_NODELAY a frame stalls about 44 ms whenever the client sends a key (Nagle plus delayed ACK). Linux
copies the option from the listening socket to every accepted one.
"""

from __future__ import annotations

import ipaddress
import socket


def make_listener(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR and TCP_NODELAY (inherited by accepted sockets on Linux)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to an outside address


def plain_http_warning(settings) -> str | None:
    """The start-up warning of a server other machines reach over plain HTTP: their browsers will not give the page
    the microphone (only https:// pages and localhost get it)."""
    if settings.tls() or is_loopback(settings.host):
        return None
    return (
        f"listening on {settings.host} without TLS: participants' browsers give the microphone only to https:// "
        "pages. Serve HTTPS with --certfile/--keyfile (TLS_CERTFILE, TLS_KEYFILE), or listen on 127.0.0.1 behind "
        "Caddy (deploy/Caddyfile) or nginx with TLS (deploy/nginx.conf)"
    )


def serve(app, socketio, settings) -> None:
    mode = settings.async_mode
    cert, key = (settings.certfile, settings.keyfile) if settings.tls() else (None, None)
    if mode == "eventlet":
        import eventlet
        import eventlet.wsgi

        sock = eventlet.listen((settings.host, settings.port), backlog=512)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it, TLS or not
        if cert:
            # eventlet's green TLS socket: the handshake runs in each connection's green thread, not in accept()
            sock = eventlet.wrap_ssl(sock, certfile=cert, keyfile=key, server_side=True)
        eventlet.wsgi.server(sock, app, log_output=False, max_size=10000)
    elif mode == "gevent":
        from gevent.pywsgi import WSGIServer

        sock = make_listener(settings.host, settings.port)
        tls = {"certfile": cert, "keyfile": key} if cert else {}
        WSGIServer(sock, app, log=None, **tls).serve_forever()
    else:
        ssl_context = (cert, key) if cert else None
        socketio.run(app, host=settings.host, port=settings.port, allow_unsafe_werkzeug=True, ssl_context=ssl_context)
