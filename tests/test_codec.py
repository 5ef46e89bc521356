import zlib

import numpy as np
import pytest

from server.core.codec import (
    FLAG_KEYFRAME,
    HEADER,
    ZLIB_WBITS,
    JpegCodec,
    XorDeflateCodec,
    XorDeflateDecoder,
    make_codec,
    palette_bytes,
)
from server.core.emulator import EmulatorSession


@pytest.fixture(scope="module")
def screens():
    emu = EmulatorSession("ms_pacman", seed=1)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(300):
        emu.step(int(rng.integers(0, 18)))
        out.append(emu.screen().copy())
    return out


def test_xor_round_trip_is_lossless(screens):
    enc, dec = XorDeflateCodec(), XorDeflateDecoder()
    kinds = []
    for i, s in enumerate(screens):
        msg = enc.encode(i, s)
        frame, key, out = dec.decode(msg)
        assert frame == i
        kinds.append(key)
        np.testing.assert_array_equal(out, s)
    assert kinds[0] is True and not any(kinds[1:])


def test_keyframe_on_demand_restarts_the_chain(screens):
    enc = XorDeflateCodec()
    enc.encode(0, screens[0])
    enc.force_keyframe()
    msg = enc.encode(1, screens[1])
    frame, flags = HEADER.unpack_from(msg)
    assert flags & FLAG_KEYFRAME
    # a fresh decoder (a reconnecting client) can start from it
    _, _, out = XorDeflateDecoder().decode(msg)
    np.testing.assert_array_equal(out, screens[1])


def test_frames_are_compressed_at_level_6(screens):
    """On a thin downlink every frame waits behind a big one (the episode's first, a busy screen's delta): frames are
    as small as zlib's level 6 makes them (a keyframe about half of level 1), and still decode."""
    from server.core.codec import deflate

    enc = XorDeflateCodec()
    msg = enc.encode(0, screens[50])
    assert len(msg) - HEADER.size == len(deflate(screens[50], 6)) < 0.75 * len(deflate(screens[50], 1))
    np.testing.assert_array_equal(XorDeflateDecoder().decode(msg)[2], screens[50])
    delta = enc.encode(1, screens[60])
    rows = (screens[60] ^ screens[50])[(screens[60] != screens[50]).any(axis=1)]
    assert len(delta) - HEADER.size - 27 == len(deflate(rows, 6)) < len(deflate(rows, 1))


def test_payload_is_rfc1950_zlib_of_the_screen(screens):
    msg = XorDeflateCodec().encode(7, screens[10])
    cmf, flg = msg[5], msg[6]  # a zlib header (what DecompressionStream('deflate') reads) with a 4 KB window
    assert cmf & 0x0F == 8 and cmf >> 4 == ZLIB_WBITS - 8 and (cmf * 256 + flg) % 31 == 0
    assert zlib.decompress(msg[5:]) == screens[10].tobytes()


def test_small_zlib_window_costs_no_compression(screens):
    """The codec's 4 KB window and small hash table give the same bytes a frame as zlib's defaults (within 2%)."""
    small = XorDeflateCodec()
    ours = sum(len(small.encode(i, s)) for i, s in enumerate(screens))
    prev, theirs = None, 0
    for s in screens:
        if prev is None:
            theirs += len(zlib.compress(s.tobytes(), small.level))
        else:
            delta = s ^ prev
            rows = delta[delta.any(axis=1)]
            theirs += 27 + (len(zlib.compress(rows.tobytes(), small.level)) if len(rows) else 0)
        theirs += HEADER.size
        prev = s
    assert ours <= theirs * 1.02, (ours, theirs)


def test_delta_frames_are_small(screens):
    enc = XorDeflateCodec()
    sizes = [len(enc.encode(i, s)) for i, s in enumerate(screens)]
    assert max(sizes[1:]) < 2000  # a few hundred bytes, versus 33,600 raw


def test_delta_before_keyframe_is_refused(screens):
    enc = XorDeflateCodec()
    enc.encode(0, screens[0])
    with pytest.raises(ValueError):
        XorDeflateDecoder().decode(enc.encode(1, screens[1]))


def test_jpeg_codec_decodes_to_the_screen(screens):
    from io import BytesIO

    from PIL import Image

    from server.core.palette import to_rgb

    msg = JpegCodec().encode(3, screens[50])
    img = np.asarray(Image.open(BytesIO(msg[5:])).convert("RGB")).astype(int)
    assert img.shape == (210, 160, 3)
    assert np.abs(img - to_rgb(screens[50]).astype(int)).mean() < 8


def test_make_codec_names_valid_choices():
    assert make_codec("xor").name == "xor"
    with pytest.raises(ValueError, match="xor, jpeg"):
        make_codec("png")


def test_palette_is_128_rgb_triples():
    assert len(palette_bytes()) == 128 * 3


def test_delta_payload_is_the_documented_row_mask_and_zlib_of_changed_rows(screens):
    """What the browser decodes (client/codec.js), checked against the definition rather than our decoder."""
    enc = XorDeflateCodec()
    enc.encode(0, screens[0])
    msg = enc.encode(1, screens[1])
    body = msg[HEADER.size :]
    mask, rest = body[:27], body[27:]
    changed = [r for r in range(210) if mask[r // 8] & (0x80 >> (r % 8))]
    truth = [r for r in range(210) if not np.array_equal(screens[0][r], screens[1][r])]
    assert changed == truth and 0 < len(changed) < 210
    rows = zlib.decompress(rest)
    assert rows == b"".join((screens[0][r] ^ screens[1][r]).tobytes() for r in changed)


def test_an_unchanged_screen_is_just_the_row_mask(screens):
    enc, dec = XorDeflateCodec(), XorDeflateDecoder()
    dec.decode(enc.encode(0, screens[5]))
    msg = enc.encode(1, screens[5].copy())
    assert msg[HEADER.size :] == bytes(27)
    np.testing.assert_array_equal(dec.decode(msg)[2], screens[5])
