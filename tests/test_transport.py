"""The direct frame path (server/web/fastpath/) on a real eventlet WebSocket over a real socket pair: a client that
stops reading never stalls the game; frames it missed are dropped whole, and what it does get decodes exactly."""

import socket
import struct

import numpy as np
import pytest

eventlet_websocket = pytest.importorskip("eventlet.websocket")

from engineio import packet as eio_packet  # noqa: E402

from server.core.codec import XorDeflateCodec, XorDeflateDecoder  # noqa: E402
from server.core.emulator import EmulatorSession  # noqa: E402
from server.web.fastpath import write_frame, write_now  # noqa: E402
from server.web.transport import FRAME_HEADER  # noqa: E402


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
        out.append((opcode, data[pos : pos + n]))
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
        if write_frame(ws, header, codec.encode(frame, screens[frame])):
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


def masked_frame(opcode: int, payload: bytes, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    """A client-to-server WebSocket frame (clients must mask)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class CountingSocket:
    """The real green socket, counting its recv calls."""

    def __init__(self, sock):
        self.sock, self.recvs = sock, 0

    def recv(self, n):
        self.recvs += 1
        return self.sock.recv(n)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_read_ahead_hands_eventlet_whole_messages_from_one_read_and_from_a_trickle():
    """A microphone chunk is two WebSocket messages (the Socket.IO header and the PCM); with ReadAhead eventlet reads
    a burst of them with one recv instead of one per header, length, mask and payload, and a message arriving a few
    bytes at a time still comes out whole."""
    from eventlet.greenio import GreenSocket

    from server.web.fastpath import ReadAhead

    pcm = np.random.default_rng(0).integers(0, 256, 4800, dtype=np.uint8).tobytes()  # 50 ms at 48 kHz
    messages = [(1, b'451-["audio",{"seq":%d,"pcm":{"_placeholder":true,"num":0}}]' % i) for i in range(10)]
    messages = [m for i, text in enumerate(messages) for m in (text, (2, pcm[i:] + pcm[:i]))]
    wire = b"".join(masked_frame(op, payload) for op, payload in messages)

    def received(ws, count):
        out = []
        for _ in range(count):
            m = ws.wait()
            out.append(m.encode() if isinstance(m, str) else bytes(m))
        return out

    expected = [payload for _, payload in messages]
    for wrap in (False, True):
        server_end, client_end = socket.socketpair()
        counting = CountingSocket(GreenSocket(server_end))
        ws = eventlet_websocket.RFC6455WebSocket(ReadAhead(counting) if wrap else counting, {}, version=13)
        client_end.sendall(wire)  # a burst (50 kB, less than a socket pair holds): all there at the first read
        assert received(ws, len(messages)) == expected
        if wrap:
            assert counting.recvs == 1, counting.recvs
        else:
            assert counting.recvs >= 3 * len(messages)  # eventlet alone: header, (length,) mask, payload
        server_end.close()
        client_end.close()

    server_end, client_end = socket.socketpair()
    ws = eventlet_websocket.RFC6455WebSocket(ReadAhead(GreenSocket(server_end)), {}, version=13)
    import eventlet

    def trickle():
        for i in range(0, len(wire), 7):
            client_end.sendall(wire[i : i + 7])
            eventlet.sleep(0)  # the reader gets each few bytes as they come

    writer = eventlet.spawn(trickle)
    assert received(ws, len(messages)) == expected
    writer.wait()
    server_end.close()
    client_end.close()


def test_frames_of_one_pass_over_the_due_ticks_are_written_when_the_pass_ends():
    """Frames sent while eventlet's hub fires its due timers (the games whose tick is due) are held and written
    together when the pass ends, each whole; one that cannot be written then is reported dropped to its game."""
    import eventlet
    from eventlet.greenio import GreenSocket
    from eventlet.hubs import get_hub

    from server.web.fastpath import FrameBatch, frame_packer

    batch = FrameBatch()
    batch.around_timers(get_hub())
    batch.around_timers(get_hub())  # idempotent
    header = eio_packet.Packet(eio_packet.MESSAGE, FRAME_HEADER)
    pairs = [socket.socketpair() for _ in range(3)]
    full_end, full_peer = pairs[2]
    full_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    full_end.setblocking(False)
    try:
        while True:
            full_end.send(b"x" * 4096)  # this client's buffer is full: its frame cannot be written
    except BlockingIOError:
        pass
    wss = [eventlet_websocket.RFC6455WebSocket(GreenSocket(a), {}, version=13) for a, _ in pairs]
    for _, b in pairs:
        b.setblocking(False)
    held, dropped = [], []

    def game(i):
        eventlet.sleep(0.01)
        assert batch.active  # inside the hub's pass over due timers
        batch.add(wss[i], frame_packer(wss[i], header, b"frame %d" % i), lambda: dropped.append(i))
        if i == 0:  # a second frame for the same client in one pass: the first is written first
            batch.add(wss[i], frame_packer(wss[i], header, b"frame 0 again"), lambda: dropped.append(i))
        try:
            held.append(pairs[i][1].recv(1 << 16) if i != 2 else b"")
        except BlockingIOError:
            held.append(b"")

    for i in range(3):
        eventlet.spawn(game, i)
    eventlet.sleep(0.1)  # (this greenlet wakes in a later pass of its own)
    assert len(batch) == 0
    assert held[1] == b"" and held[2] == b""  # nothing went out during the pass (game 0 wrote its first early)
    assert dropped == [2]
    got1 = ws_messages(pairs[1][1].recv(1 << 16))
    assert [p for _, p in got1] == [("4" + FRAME_HEADER).encode(), b"frame 1"]
    got0 = held[0] + pairs[0][1].recv(1 << 16)
    assert [p for _, p in ws_messages(got0)][1::2] == [b"frame 0", b"frame 0 again"]
    for a, b in pairs:
        a.close()
        b.close()


def test_a_frame_the_socket_takes_only_part_of_is_finished_later_without_stalling_the_hub():
    """Written after the pass, a frame the client's buffer has room for only in part: the rest waits for room (in a
    green thread of its own; the hub itself must never wait), and the frame arrives whole."""
    import eventlet
    from eventlet.greenio import GreenSocket
    from eventlet.hubs import get_hub

    from server.web.fastpath import FrameBatch, frame_packer

    batch = FrameBatch()
    batch.around_timers(get_hub())
    header = eio_packet.Packet(eio_packet.MESSAGE, FRAME_HEADER)
    server_end, client_end, filler = _full_socket_pair()
    ws = eventlet_websocket.RFC6455WebSocket(GreenSocket(server_end), {}, version=13)
    payload = np.random.default_rng(2).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    dropped, ticks = [], []
    reader = GreenSocket(client_end)
    data = bytearray(reader.recv(1500))  # room for part of the frame, not all of it

    def game():
        eventlet.sleep(0.01)
        batch.add(ws, frame_packer(ws, header, payload), lambda: dropped.append(1))

    def other_game():  # keeps ticking while the frame waits for room
        for _ in range(5):
            eventlet.sleep(0.005)
            ticks.append(1)

    eventlet.spawn(game)
    eventlet.spawn(other_game)
    eventlet.sleep(0.05)
    assert len(ticks) == 5 and not dropped
    expected = filler + 2 + len("4" + FRAME_HEADER) + 4 + len(payload)  # filler, then the two messages
    while len(data) < expected:
        data += reader.recv(1 << 16)
    msgs = ws_messages(bytes(data[filler:]))
    assert [p for _, p in msgs] == [("4" + FRAME_HEADER).encode(), payload]
    server_end.close()
    client_end.close()


def test_messages_are_packed_as_eventlets_websocket_packs_them():
    """The frame writer packs its WebSocket messages itself (on the hot path); byte for byte what eventlet's
    RFC6455WebSocket makes of the same data without compression, at every length encoding, binary and text."""
    from eventlet.websocket import RFC6455WebSocket

    from server.web.rfc6455 import ws_message

    ws = RFC6455WebSocket(None, {}, None)
    for n in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        assert ws_message(data) == ws._pack_message(data), n
        text = "h" * n
        assert ws_message(text.encode(), opcode=1) == ws._pack_message(text), n


def _full_socket_pair():
    """A server end whose send buffer is full (the client stopped reading), and the client end."""
    server_end, client_end = socket.socketpair()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server_end.setblocking(False)
    filler = 0
    try:
        while True:
            filler += server_end.send(b"x" * 1000)
    except BlockingIOError:
        pass
    return server_end, client_end, filler


def test_a_message_the_socket_takes_only_part_of_does_not_hold_up_the_writer():
    """write_now (the game loop's writes) with room for part of a message: it returns at once, and the rest follows
    from a green thread of its own when the client reads."""
    import eventlet
    from eventlet.greenio import GreenSocket

    server_end, client_end, filler = _full_socket_pair()
    ws = eventlet_websocket.RFC6455WebSocket(GreenSocket(server_end), {}, version=13)
    reader = GreenSocket(client_end)
    data = bytearray(reader.recv(1500))  # room for part of the message, not all of it
    payload = np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    with eventlet.Timeout(0.5):  # before: it waited here until the client had read everything
        assert write_now(ws, lambda: ws._pack_message(payload)) is True
    assert write_now(ws, lambda: ws._pack_message(b"next")) is False  # the rest is still going: not interleaved
    while len(data) < filler + 4 + len(payload):
        data += reader.recv(1 << 16)
    assert ws_messages(bytes(data[filler:])) == [(2, payload)]
    eventlet.sleep(0)  # the finisher releases the send lock
    assert write_now(ws, lambda: ws._pack_message(b"next")) is True
    server_end.close()
    client_end.close()


def test_an_event_sent_from_the_game_loop_to_a_congested_client_never_waits_there():
    """The Ticker's passes run inside the hub's timer pass, for every game of the process: an event that must arrive
    (`audio_status`) for a client whose buffer is full is sent from a green thread of its own instead of waiting there,
    and arrives, after the frames of that pass, once the client reads."""
    from types import SimpleNamespace

    import eventlet
    import socketio
    from eventlet.greenio import GreenSocket

    from server.web.fastpath import DirectSender

    sio = SimpleNamespace(server=socketio.Server(async_mode="eventlet"))
    eio_sid = "E1"
    sid = sio.server.manager.connect(eio_sid, "/")
    server_end, client_end, filler = _full_socket_pair()
    ws = eventlet_websocket.RFC6455WebSocket(GreenSocket(server_end), {}, version=13)
    sio.server.eio.sockets[eio_sid] = SimpleNamespace(ws=ws, closed=False, upgraded=True, upgrading=False)
    send = DirectSender(sio)
    returned = []

    def game_loop_pass():
        eventlet.sleep(0.01)  # resumed by a timer: inside the hub's pass, as the Ticker is
        with eventlet.Timeout(0.5):  # before: it waited here for the client, stalling every game
            returned.append(send("audio_status", sid, {"ok": False, "message": "no audio"}))

    eventlet.spawn(game_loop_pass)
    eventlet.sleep(0.1)
    assert returned == [True]
    reader = GreenSocket(client_end)
    data = bytearray()
    while b"audio_status" not in data:
        data += reader.recv(1 << 16)
    assert ws_messages(bytes(data[filler:])) == [(1, b'42["audio_status",{"ok":false,"message":"no audio"}]')]
    server_end.close()
    client_end.close()


def test_the_ticker_can_have_the_frames_held_in_its_pass_written_before_the_pass_ends():
    """`send.flush_frames()` (called by a long pass of the Ticker every few games) writes the frames held so far."""
    from types import SimpleNamespace

    import eventlet
    import socketio
    from eventlet.greenio import GreenSocket

    from server.web.fastpath import DirectSender

    sio = SimpleNamespace(server=socketio.Server(async_mode="eventlet"))
    sid = sio.server.manager.connect("E1", "/")
    server_end, client_end = socket.socketpair()
    client_end.setblocking(False)
    ws = eventlet_websocket.RFC6455WebSocket(GreenSocket(server_end), {}, version=13)
    sio.server.eio.sockets["E1"] = SimpleNamespace(ws=ws, closed=False, upgraded=True, upgrading=False)
    send = DirectSender(sio)
    seen = []

    def wire() -> bytes:
        try:
            return client_end.recv(1 << 16)
        except BlockingIOError:
            return b""

    def game_loop_pass():
        eventlet.sleep(0.01)  # resumed by a timer: inside the hub's pass, as the Ticker is
        assert send("frame", sid, b"first") is True
        seen.append(wire())  # held until the pass ends...
        send.flush_frames()
        seen.append(wire())  # ...or until the Ticker has them written
        send.flush_frames()  # nothing held: nothing written
        seen.append(wire())

    eventlet.spawn(game_loop_pass)
    eventlet.sleep(0.1)
    assert seen[0] == b"" and seen[2] == b""
    assert [p for _, p in ws_messages(seen[1])] == [("4" + FRAME_HEADER).encode(), b"first"]
    server_end.close()
    client_end.close()


@pytest.mark.parametrize("args", [("--async-mode", "eventlet", "--no-fast-path"), ("--async-mode", "gevent")])
def test_on_the_plain_path_a_congested_client_loses_frames_and_the_others_keep_60_hz(tmp_path, args):
    """python-socketio's emit (the plain path) queues without bound; a client that never acks a paint, and one that
    stops reading its socket, have their frames skipped instead (MAX_UNACKED_FRAMES), while their games and another
    client's go on at 60 Hz."""
    import threading
    import time

    from helpers import ScriptedDemonstrator, ServerProcess

    from server.core.connection import MAX_UNACKED_FRAMES

    server = ServerProcess(tmp_path / "store", *args, "--game", "pong")
    clients, release = [], threading.Event()
    try:
        good = ScriptedDemonstrator(server.url)
        silent = ScriptedDemonstrator(server.url, ack=False)  # reads its socket, never acks
        stuck = ScriptedDemonstrator(server.url)  # stops reading its socket at its first frame
        clients += [good, silent, stuck]
        stuck_frames: list[int] = []

        @stuck.sio.on("frame")
        def blocked(data):  # messages are handled on the reader thread (helpers.py): it reads nothing while here
            release.wait(30)
            stuck_frames.append(int.from_bytes(data[:4], "little"))

        for c in clients:
            c.start()
        time.sleep(4.0)  # 240 frames each
        ts = np.array(good.frame_times[-180:])
        assert len(ts) / (ts[-1] - ts[0]) == pytest.approx(60, abs=3)
        assert len(silent.frames) < MAX_UNACKED_FRAMES + 20, len(silent.frames)  # the first ones, then probes
        release.set()
        time.sleep(1.0)  # what was queued for the stuck client arrives
        assert 1 <= len(stuck_frames) < MAX_UNACKED_FRAMES + 30, len(stuck_frames)
        for c in clients:  # all at once: each close waits out the end grace
            c.flush_acks()
            c.sio.emit("stop")
        for c in clients:
            c.wait_for(lambda c=c: len(c.ends) >= 1, 15)
        ends = [c.ends[-1] for c in clients]
        assert all(e["frames"] >= 240 for e in ends), ends  # no game waited for its client
        ts = np.array(good.frame_times[-180:])
        assert len(ts) / (ts[-1] - ts[0]) == pytest.approx(60, abs=3)
    finally:
        release.set()
        for c in clients:
            c.close()
        server.stop()
