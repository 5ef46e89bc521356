"""The direct frame path (server/web/transport.py) on a real eventlet WebSocket over a real socket pair: a client that
stops reading never stalls the game; frames it missed are dropped whole, and what it does get decodes exactly."""

import socket
import struct

import numpy as np
import pytest

eventlet_websocket = pytest.importorskip("eventlet.websocket")

from engineio import packet as eio_packet  # noqa: E402

from server.core.codec import XorDeflateCodec, XorDeflateDecoder  # noqa: E402
from server.core.emulator import EmulatorSession  # noqa: E402
from server.web.transport import FRAME_HEADER, write_frame, write_now  # noqa: E402


def ws_messages(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server-to-client WebSocket frames (RFC 6455 section 5.2) into (opcode, payload)."""
    out, pos = [], 0
    while pos < len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        assert data[pos] & 0x80 and not data[pos + 1] & 0x80  # final, unmasked
        pos += 2
        if n == 126:
            n, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack_from("!Q", data, pos)[0], pos + 8
        out.append((opcode, data[pos:pos + n]))
        pos += n
    assert pos == len(data), "a message was cut short"
    return out


def test_a_client_that_stops_reading_loses_whole_frames_and_decodes_the_rest():
    from eventlet.greenio import GreenSocket

    server_end, client_end = socket.socketpair()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel's minimum: fills in a few frames
    client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws = eventlet_websocket.RFC6455WebSocket(GreenSocket(server_end), {}, version=13)
    header = eio_packet.Packet(eio_packet.MESSAGE, FRAME_HEADER)

    emu = EmulatorSession("pong", 0)
    codec = XorDeflateCodec()
    rng = np.random.default_rng(1)
    client_end.setblocking(False)
    screens, delivered, dropped, data = {}, [], [], b""
    for frame in range(600):  # a client that reads only now and then: writing must never block (it would hang)
        emu.step(int(rng.integers(0, 18)))
        screens[frame] = emu.screen().copy()
        if write_frame(ws, header, codec.encode(frame, screens[frame]), {}):
            delivered.append(frame)
        else:
            codec.discard_last()
            dropped.append(frame)
            # the score line is best-effort too: with the buffer full it is not written (and does not wait)
            assert write_now(ws, lambda: ws._pack_message('42["hud",{"score":1}]')) is False
        if frame % 100 == 99:  # it catches up on what is buffered
            try:
                while chunk := client_end.recv(1 << 16):
                    data += chunk
            except BlockingIOError:
                pass
    resumed = [f for f in delivered if f - 1 in dropped]
    assert len(dropped) > 100 and len(resumed) >= 3, (len(delivered), len(dropped), len(resumed))

    server_end.close()
    client_end.setblocking(True)
    while chunk := client_end.recv(1 << 16):
        data += chunk
    client_end.close()

    msgs = ws_messages(data)
    assert len(msgs) == 2 * len(delivered)
    decoder = XorDeflateDecoder()
    for (op_text, text), (op_bin, payload), frame in zip(msgs[::2], msgs[1::2], delivered, strict=True):
        assert (op_text, op_bin) == (1, 2) and text.decode() == "4" + FRAME_HEADER
        got, _, screen = decoder.decode(payload)
        assert got == frame and np.array_equal(screen, screens[frame])  # deltas against the last frame delivered
