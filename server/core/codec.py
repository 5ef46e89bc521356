"""Frame codecs: how a 210x160 screen of palette indices travels to the browser.

A frame message is `uint32 LE frame number, uint8 flags (bit 0: keyframe), payload`. The default codec `xor` is
lossless. A keyframe's payload is zlib (RFC 1950) of the screen bytes. A delta frame's payload is a bitmask of the
rows that differ from the previous frame (27 bytes for 210 rows, most significant bit first: row r is bit
`0x80 >> (r % 8)` of byte `r // 8`), then zlib of just those rows XORed with the previous frame's rows (nothing when
no row changed). Most games change a tenth of the rows a frame, so this is about 100 bytes a frame, and compressing
the changed rows only takes half the time of compressing the whole XORed screen. `jpeg` sends an RGB JPEG, for
comparison and for clients without DecompressionStream.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Protocol

import numpy as np

from .palette import NTSC_PALETTE, to_rgb

HEADER = struct.Struct("<IB")
FLAG_KEYFRAME = 1
ZLIB_WBITS = 12
ZLIB_MEMLEVEL = 4


def deflate(data, level: int) -> bytes:
    """zlib (RFC 1950) of `data` with the codec's small window and hash table."""
    c = zlib.compressobj(level, zlib.DEFLATED, ZLIB_WBITS, ZLIB_MEMLEVEL)
    return c.compress(data) + c.flush()


class FrameCodec(Protocol):
    """Encodes successive screens of one stream; `force_keyframe` restarts the delta chain, `discard_last` forgets a
    message that was never delivered."""

    name: str

    def encode(self, frame: int, screen: np.ndarray) -> bytes: ...

    def force_keyframe(self) -> None: ...

    def discard_last(self) -> None: ...


#: zlib level of every frame. Level 6 against level 1 on Space Invaders (scripts/codec_levels.py): its keyframe (an
#: episode's first frame, a resume's) 473 bytes against 1043; its deltas 13% smaller on average and its busiest half
#: the size (p99 322 against 602 bytes, at most 467 against 1005), for about 4 us more a frame. On a thin downlink
#: every frame waits behind a big one, the frame with a key too (docs/benchmarks.md, "Real networks").
LEVEL = 6


class XorDeflateCodec:
    """Lossless: palette indices; keyframes whole, delta frames as the changed rows XORed; zlib at `level`."""

    name = "xor"

    def __init__(self, level: int = LEVEL) -> None:
        self.level = level
        self._prev: np.ndarray | None = None  # the screen the client will hold after the last message
        self._sent: np.ndarray | None = None  # ... and before it
        self._delta = np.empty((0, 0), np.uint8)  # the XOR of the last two screens, reused (a new array cost more)

    def force_keyframe(self) -> None:
        self._prev = None

    def discard_last(self) -> None:
        """The last message never reached the client: encode the next screen against the one before it."""
        self._prev = self._sent

    def encode(self, frame: int, screen: np.ndarray) -> bytes:
        """The message for `screen`. The codec keeps `screen` (no copy): the caller must not change it afterwards
        (the emulator's `getScreen()` returns a new array each time)."""
        prev, self._prev = self._prev, screen
        self._sent = prev
        if prev is None:
            return HEADER.pack(frame, FLAG_KEYFRAME) + deflate(screen, self.level)
        if self._delta.shape != screen.shape:
            self._delta = np.empty_like(screen)
        delta = np.bitwise_xor(screen, prev, out=self._delta)
        # a row changed if any of its bytes did: OR its bytes together, as uint64 words (20 a row instead of 160);
        # numpy's `any` costs more than this reduction
        words = delta.view(np.uint64) if delta.shape[1] % 8 == 0 else delta
        changed = np.bitwise_or.reduce(words, axis=1).astype(bool)
        rows = delta[changed]
        payload = deflate(rows, self.level) if len(rows) else b""
        return HEADER.pack(frame, 0) + np.packbits(changed).tobytes() + payload


class XorDeflateDecoder:
    """The client's side of `xor`, in Python: used by the replay cache, tests, scripted clients and the benchmark."""

    def __init__(self, height: int = 210, width: int = 160) -> None:
        self.shape = (height, width)
        self.mask_bytes = (height + 7) // 8
        self.screen: np.ndarray | None = None

    def decode(self, message: bytes) -> tuple[int, bool, np.ndarray]:
        """Apply one message; returns (frame, keyframe, screen). The screen returned is a new array each time."""
        frame, flags = HEADER.unpack_from(message)
        body = memoryview(message)[HEADER.size :]
        keyframe = bool(flags & FLAG_KEYFRAME)
        if keyframe:
            self.screen = np.frombuffer(zlib.decompress(body), dtype=np.uint8).reshape(self.shape).copy()
            return frame, keyframe, self.screen
        if self.screen is None:
            raise ValueError(f"delta frame {frame} arrived before any keyframe")
        height, width = self.shape
        if len(body) < self.mask_bytes:
            raise ValueError(f"delta frame {frame}: {len(body)} bytes, shorter than its row mask")
        changed = np.unpackbits(np.frombuffer(body[: self.mask_bytes], dtype=np.uint8), count=height).astype(bool)
        screen = self.screen.copy()
        if len(body) > self.mask_bytes:
            rows = np.frombuffer(zlib.decompress(body[self.mask_bytes :]), dtype=np.uint8)
            if rows.size != int(changed.sum()) * width:
                raise ValueError(f"delta frame {frame}: {rows.size} bytes for {int(changed.sum())} changed rows")
            screen[changed] ^= rows.reshape(-1, width)
        elif changed.any():
            raise ValueError(f"delta frame {frame}: rows marked changed but no data")
        self.screen = screen
        return frame, keyframe, screen


class JpegCodec:
    """Lossy: the RGB screen as a JPEG (every frame is a keyframe)."""

    name = "jpeg"

    def __init__(self, quality: int = 85) -> None:
        try:
            from PIL import Image
        except ImportError as e:  # pragma: no cover - Pillow is in requirements.txt
            raise ImportError("the jpeg codec needs Pillow: pip install pillow") from e
        self._image = Image
        self.quality = quality

    def force_keyframe(self) -> None:
        pass

    def discard_last(self) -> None:
        pass

    def encode(self, frame: int, screen: np.ndarray) -> bytes:
        buf = io.BytesIO()
        self._image.fromarray(to_rgb(screen)).save(buf, format="JPEG", quality=self.quality, subsampling=0)
        return HEADER.pack(frame, FLAG_KEYFRAME) + buf.getvalue()


CODECS: dict[str, type[FrameCodec]] = {"xor": XorDeflateCodec, "jpeg": JpegCodec}


def make_codec(name: str) -> FrameCodec:
    """A fresh encoder for one stream; raises ValueError naming the valid codecs."""
    try:
        return CODECS[name]()
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; valid codecs: {', '.join(CODECS)}") from None


def palette_bytes() -> bytes:
    """The 128x3 RGB palette as sent once in the `episode` message."""
    return NTSC_PALETTE.tobytes()
