"""A PCM WAV file that can be written out of order and is valid after every flush (the header is rewritten)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

HEADER_BYTES = 44


def wav_header(rate: int, channels: int, sample_bytes: int, data_bytes: int) -> bytes:
    block = channels * sample_bytes
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, sample_bytes * 8)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def parse_header(head: bytes) -> tuple[int, int, int, int]:
    """(channels, rate, bits per sample, data bytes) from the first HEADER_BYTES of one of our WAV files."""
    channels, rate = struct.unpack_from("<HI", head, 22)
    bits = struct.unpack_from("<H", head, 34)[0]
    size = struct.unpack_from("<I", head, 40)[0]
    return channels, rate, bits, size


class WavWriter:
    """Mono PCM: `write_at(sample_index, data)` writes anywhere; holes read back as silence (zeros)."""

    def __init__(self, path: Path, rate: int, sample_bytes: int = 2) -> None:
        self.path = Path(path)
        self.rate = rate
        self.sample_bytes = sample_bytes
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.samples = 0  # extent written so far
        self._header_samples = -1
        self.flush()

    def write_at(self, index: int, data: bytes) -> None:
        os.pwrite(self.fd, data, HEADER_BYTES + index * self.sample_bytes)
        self.samples = max(self.samples, index + len(data) // self.sample_bytes)

    def append(self, data: bytes) -> None:
        self.write_at(self.samples, data)

    def flush(self) -> None:
        if self._header_samples != self.samples:
            os.pwrite(self.fd, wav_header(self.rate, 1, self.sample_bytes, self.samples * self.sample_bytes), 0)
            self._header_samples = self.samples

    def truncate(self, samples: int) -> None:
        """Cut to, or pad with silence to, exactly `samples`."""
        os.ftruncate(self.fd, HEADER_BYTES + samples * self.sample_bytes)
        self.samples = samples
        self.flush()

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    def abandon(self) -> None:
        """Close without writing (after a write error); the header may lag its data (recorder._repair_wav)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_wav(path: Path):
    """(rate, numpy array) for a mono PCM16 or PCM8 WAV (PCM8 converted to signed int16)."""
    import numpy as np

    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file")
    channels, rate, bits, size = parse_header(data)
    raw = data[HEADER_BYTES : HEADER_BYTES + size]
    if bits == 16:
        a = np.frombuffer(raw, dtype="<i2")
    elif bits == 8:
        a = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) * 256
    else:
        raise ValueError(f"{path}: {bits}-bit WAV is not supported")
    if channels > 1:
        a = a.reshape(-1, channels)
    return rate, a
