"""A PCM WAV file that can be written out of order and is valid after every flush (the header is rewritten)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

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


def parse_wav(data: bytes, name: str = "WAV", mono: bool = True) -> tuple[int, np.ndarray]:
    """(rate, int16 samples) of a PCM8/PCM16 WAV held in memory: the one WAV reader (other chunks are skipped; PCM8
    is scaled to signed 16 bit; several channels are averaged, or with `mono=False` kept as (n, channels)).
    ValueError, naming `name`, for anything else."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{name} is not a WAV file")
    pos, fmt_chunk, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt_chunk = body
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt_chunk is None or payload is None:
        raise ValueError(f"{name} has no fmt or data chunk")
    tag, channels, rate = struct.unpack_from("<HHI", fmt_chunk, 0)
    bits = struct.unpack_from("<H", fmt_chunk, 14)[0]
    if tag != 1 or bits not in (8, 16):
        raise ValueError(f"{name}: only PCM 8 or 16 bit is supported (format {tag}, {bits} bit)")
    if bits == 16:
        a = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
    else:
        a = ((np.frombuffer(payload, dtype=np.uint8).astype(np.int16) - 128) * 256).astype(np.int16)
    if channels > 1:
        a = a[: a.size // channels * channels].reshape(-1, channels)
        if mono:
            a = a.mean(axis=1).astype(np.int16)
    return rate, a


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """(rate, int16 samples) of a WAV file (`parse_wav`, channels kept as (n, channels))."""
    path = Path(path)
    return parse_wav(path.read_bytes(), str(path), mono=False)


def repair_wav(path: Path, sample_bytes: int | None) -> bool:
    """Make a WAV's header match its data after a crash (the header is rewritten only at flushes)."""
    if not path.exists() or path.stat().st_size < HEADER_BYTES:
        return False
    with open(path, "r+b") as f:
        _, rate, bits, _ = parse_header(f.read(HEADER_BYTES))
        width = sample_bytes or bits // 8
        data = path.stat().st_size - HEADER_BYTES
        data -= data % width
        f.seek(0)
        f.write(wav_header(rate, 1, width, data))
        f.truncate(HEADER_BYTES + data)
    return True
