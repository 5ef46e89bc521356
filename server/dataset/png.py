"""PNG files of RGB screens, deflated by zlib directly: what the Atari Grand Challenge export writes, one a frame.

An 8-bit RGB PNG (colour type 2, not interlaced), every row with filter type 0 (None), one IDAT chunk. Any PNG reader
reads it as PIL's own PNGs (tests/test_export.py reads the export as AGC's and T-REX's code do).

Why not PIL's `save(compress_level=1)`, as before: 510-860 us a screen (tests/trex_recordings.py's Space Invaders
and Pong, one core), and still 420-750 us at compress_level=0, so the time is not deflate's but PIL's own: it filters
every row four ways (None, Sub, Up, Paeth) to pick one, and sets up a deflate stream with a 128 KB hash table (zlib's
memLevel 9) for each screen. Atari screens are runs of a few colours, which deflate finds without any filter:
unfiltered, at zlib level 1 with memLevel 4, a screen takes 140-165 us and 1.2-1.8 KB (PIL's: 1.3-2.0 KB). About 40
us of that is zlib's Adler-32 of the 100 KB; the rest is deflate itself, which takes as long on a black screen.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib's memLevel: 4 (a 16 KB hash table) deflates a screen as well as the default 8 and 15-25% faster, the table
#: being cleared for every stream.
_MEM_LEVEL = 4


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


_IEND = _chunk(b"IEND", b"")


class RgbPng:
    """Encodes (height, width, 3) uint8 RGB arrays of one size as PNG files; `level` is zlib's (0-9)."""

    def __init__(self, height: int, width: int, level: int = 1) -> None:
        if not 0 <= level <= 9:
            raise ValueError(f"PNG compression level must be 0-9, not {level}")
        self.level = level
        self.shape = (height, width, 3)
        self._rows = np.zeros((height, 1 + 3 * width), np.uint8)  # byte 0 of each row: its filter type, None
        self._head = _SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))

    def encode(self, rgb: np.ndarray) -> bytes:
        if rgb.shape != self.shape:
            raise ValueError(f"expected an array of shape {self.shape}, not {rgb.shape}")
        self._rows[:, 1:] = rgb.reshape(self.shape[0], -1)
        z = zlib.compressobj(self.level, zlib.DEFLATED, 15, _MEM_LEVEL)
        return self._head + _chunk(b"IDAT", z.compress(self._rows.data) + z.flush()) + _IEND


def write_file(path: str, data: bytes) -> None:
    """Create or replace the file `path` with `data`: os.open/write/close take about 20 us where a Python file object
    takes 24-38 us, for the 2 KB files the AGC export writes one a frame."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
