"""Frame codecs: how a 210x160 screen of palette indices travels to the browser.

A frame message is `uint32 LE frame number, uint8 flags (bit 0: keyframe), payload`. The default codec `xor` sends
zlib (RFC 1950) of the screen bytes, XORed with the previous frame's unless a keyframe: lossless, a few hundred
bytes a frame. `jpeg` sends an RGB JPEG, for comparison and for clients without DecompressionStream.
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


class FrameCodec(Protocol):
    """Encodes successive screens of one stream; `force_keyframe` restarts the delta chain."""

    name: str

    def encode(self, frame: int, screen: np.ndarray) -> bytes: ...

    def force_keyframe(self) -> None: ...


class XorDeflateCodec:
    """Lossless: palette indices, XOR with the previous frame, zlib level 1."""

    name = "xor"

    def __init__(self, level: int = 1) -> None:
        self.level = level
        self._prev: np.ndarray | None = None

    def force_keyframe(self) -> None:
        self._prev = None

    def encode(self, frame: int, screen: np.ndarray) -> bytes:
        if self._prev is None:
            flags, raw = FLAG_KEYFRAME, screen
        else:
            flags, raw = 0, np.bitwise_xor(screen, self._prev)
        self._prev = screen.copy()
        return HEADER.pack(frame, flags) + zlib.compress(raw.tobytes(), self.level)


class XorDeflateDecoder:
    """The client's side of `xor`, in Python: used by tests, scripted clients and the benchmark."""

    def __init__(self, height: int = 210, width: int = 160) -> None:
        self.shape = (height, width)
        self.screen: np.ndarray | None = None

    def decode(self, message: bytes) -> tuple[int, bool, np.ndarray]:
        frame, flags = HEADER.unpack_from(message)
        data = np.frombuffer(zlib.decompress(message[HEADER.size :]), dtype=np.uint8).reshape(self.shape)
        keyframe = bool(flags & FLAG_KEYFRAME)
        if keyframe:
            self.screen = data.copy()
        elif self.screen is None:
            raise ValueError(f"delta frame {frame} arrived before any keyframe")
        else:
            self.screen = np.bitwise_xor(self.screen, data)
        return frame, keyframe, self.screen


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

    def encode(self, frame: int, screen: np.ndarray) -> bytes:
        buf = io.BytesIO()
        self._image.fromarray(to_rgb(screen)).save(buf, format="JPEG", quality=self.quality, subsampling=0)
        return HEADER.pack(frame, FLAG_KEYFRAME) + buf.getvalue()


CODECS = {"xor": XorDeflateCodec, "jpeg": JpegCodec}


def make_codec(name: str) -> FrameCodec:
    """A fresh encoder for one stream; raises ValueError naming the valid codecs."""
    try:
        return CODECS[name]()
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; valid codecs: {', '.join(CODECS)}") from None


def palette_bytes() -> bytes:
    """The 128x3 RGB palette as sent once in the `episode` message."""
    return NTSC_PALETTE.tobytes()
