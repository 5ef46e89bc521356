"""server/web/fastpath/: the libraries it patches still have the shapes it was written against, `install` takes the
fast path only under eventlet, when it is on and the versions match, and falls back to the plain path otherwise."""

import inspect
import logging
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("eventlet")

import socketio  # noqa: E402

from server.settings_sources import load_settings  # noqa: E402
from server.web import fastpath  # noqa: E402
from server.web.transport import Sender  # noqa: E402


def a_socketio():
    return SimpleNamespace(server=socketio.Server(async_mode="eventlet"))


def test_the_installed_libraries_are_the_versions_the_fast_path_was_written_against():
    """If this fails after an upgrade, check the shapes below against the new versions, then update WRITTEN_AGAINST
    (and requirements.txt); until then the server takes the plain path."""
    assert fastpath.version_mismatches() == []


def test_the_private_internals_the_fast_path_relies_on_are_there():
    """If an upgrade of eventlet, python-engineio or python-socketio moves these, this fails instead of the server
    silently taking a broken path."""
    from engineio import socket as eio_socket
    from eventlet import hubs
    from eventlet.websocket import RFC6455WebSocket, WebSocketWSGI

    assert list(inspect.signature(eio_socket.Socket._websocket_handler).parameters) == ["self", "ws"]
    assert list(inspect.signature(socketio.Server._handle_event).parameters) == [
        "self",
        "eio_sid",
        "namespace",
        "id",
        "data",
    ]
    for name in ("_pack_message", "_send", "_recv_frame", "_apply_mask"):
        assert callable(getattr(RFC6455WebSocket, name))
    assert "_negotiate_permessage_deflate" in vars(WebSocketWSGI)
    src = inspect.getsource(RFC6455WebSocket.__init__) + inspect.getsource(RFC6455WebSocket.__mro__[1].__init__)
    assert "self._sendlock" in src and "self.socket = sock" in src and "self.extensions" in src
    hub = hubs.get_hub()
    assert list(inspect.signature(hub.fire_timers).parameters) == ["when"] and hasattr(hub, "greenlet")


def test_install_takes_the_fast_path_under_eventlet_and_patches_the_libraries():
    from engineio import socket as eio_socket
    from eventlet.websocket import RFC6455WebSocket, WebSocketWSGI

    sio = a_socketio()
    send = fastpath.install(sio, "eventlet", True)
    assert isinstance(send, fastpath.DirectSender)
    assert eio_socket.Socket._websocket_handler.remembers_ws
    assert RFC6455WebSocket._apply_mask is fastpath.unmask
    assert WebSocketWSGI._negotiate_permessage_deflate(None, "permessage-deflate") is None
    assert sio.server._handle_event.guards_reserved_events
    fastpath.install(sio, "eventlet", True)  # idempotent: wrapped once
    assert sio.server._handle_event.__closure__ is not None
    assert not getattr(_wrapped(sio.server._handle_event), "guards_reserved_events", False)


def _wrapped(guarded):
    return next(c.cell_contents for c in guarded.__closure__ if callable(c.cell_contents))


@pytest.mark.parametrize(
    "mode,enabled,versions,says",
    [
        (
            "eventlet",
            True,
            {**fastpath.WRITTEN_AGAINST, "eventlet": "0.40.0"},
            "eventlet 0.40.0 (written against 0.41.3)",
        ),
        ("eventlet", True, {**fastpath.WRITTEN_AGAINST, "python-engineio": None}, "python-engineio missing"),
        ("eventlet", False, fastpath.WRITTEN_AGAINST, "the fast path is off"),
        ("gevent", True, fastpath.WRITTEN_AGAINST, "not gevent"),
        ("threading", True, fastpath.WRITTEN_AGAINST, "not threading"),
    ],
)
def test_install_falls_back_to_the_plain_path_with_one_log_line_saying_why(caplog, mode, enabled, versions, says):
    sio = a_socketio()
    with caplog.at_level(logging.INFO, logger=fastpath.log.name):
        send = fastpath.install(sio, mode, enabled, versions=versions)
    assert type(send) is Sender
    lines = [r.getMessage() for r in caplog.records if r.name == fastpath.log.name]
    assert len(lines) == 1 and "plain" in lines[0] and says in lines[0], lines
    assert sio.server._handle_event.guards_reserved_events  # not a speed trick: every path has it


def test_install_leaves_python_socketio_alone_if_its_version_differs():
    sio = a_socketio()
    original = sio.server._handle_event
    send = fastpath.install(sio, "eventlet", True, versions={**fastpath.WRITTEN_AGAINST, "python-socketio": "6.0.0"})
    assert type(send) is Sender and sio.server._handle_event == original


def test_client_events_named_like_reserved_ones_are_dropped():
    sio = a_socketio()
    seen = []
    sio.server._handle_event = lambda *args: seen.append(args)
    fastpath.guard_reserved_events(sio.server)
    for name in ("connect", "disconnect", "connect_error"):
        assert sio.server._handle_event("E1", "/", None, [name, {"x": 1}]) is None
    sio.server._handle_event("E1", "/", None, ["key", {"x": 1}])
    assert seen == [("E1", "/", None, ["key", {"x": 1}])]


def test_the_fast_path_setting():
    assert load_settings([], environ={}).fast_path is True
    assert load_settings(["--no-fast-path"], environ={}).fast_path is False
    for value, want in (("0", False), ("false", False), ("1", True), ("true", True), ("False", False)):
        assert load_settings([], environ={"FAST_PATH": value}).fast_path is want
    assert load_settings(["--no-fast-path"], environ={"FAST_PATH": "1"}).fast_path is False  # the command line wins


@pytest.mark.parametrize(
    "length,offset", [(0, 0), (1, 0), (5, 3), (125, 1), (1023, 2), (1024, 0), (9600, 3), (9603, 1)]
)
def test_fast_websocket_unmasking_matches_the_definition(length, offset):
    rng = np.random.default_rng(length + offset)
    data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    mask = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    expected = bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))  # RFC 6455, section 5.3
    assert fastpath.unmask(data, mask, length, offset) == expected
