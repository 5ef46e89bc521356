"""Run the WSGI server for an async mode on a listening socket with TCP_NODELAY.

Without TCP_NODELAY a frame stalls about 44 ms whenever the client sends a key (Nagle plus delayed ACK). Linux
copies the option from the listening socket to every accepted one.
"""

from __future__ import annotations

import ipaddress
import socket

from .web.transport import no_permessage_deflate


def make_listener(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR and TCP_NODELAY (inherited by accepted sockets on Linux)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def unmask(data: bytes, mask, length: int | None = None, offset: int = 0) -> bytes:
    """XOR a client's WebSocket payload with its 4-byte mask, starting at byte `offset` of the mask cycle."""
    if length is None:
        length = len(data)
    if not length:
        return b""
    m = bytes(mask)
    k = offset % 4
    m = m[k:] + m[:k]
    if length < 1024:  # a big-integer XOR: about 1 us for a key or paint-ack message
        key = (m * (length // 4 + 1))[:length]
        return (int.from_bytes(data[:length], "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")
    import numpy as np  # a microphone chunk: about 4 us for 9.6 kB

    a = np.frombuffer(data, dtype=np.uint8, count=length).copy()
    n4 = length - length % 4
    a[:n4].view(np.uint32)[:] ^= np.frombuffer(m, dtype=np.uint32)[0]
    for i in range(n4, length):
        a[i] ^= m[i - n4]
    return a.tobytes()


def fast_eventlet_unmask() -> None:
    """eventlet unmasks every byte a client sends with a Python generator: 2.4 ms (more under load) for each 100 ms
    microphone chunk, most of the server's time once demonstrators talk. The same XOR, done on whole arrays."""
    from eventlet.websocket import RFC6455WebSocket

    RFC6455WebSocket._apply_mask = staticmethod(unmask)


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

        fast_eventlet_unmask()
        no_permessage_deflate()

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
