"""PNG writing for decoded images, on every core.

Writing the PNG was the second stage of a command-line decode after the synthesis: Pillow at zlib
level 1 took 0.73 s for a 12 MP photo (and 30 ms for a Kodak image) on one core, most of it its
per-row choice among the five filters and one zlib stream. Here every row takes the Up filter
(the row above subtracted, byte by byte), and bands of rows are filtered and deflated in threads
(numpy and zlib release the GIL): each band a raw deflate segment ended by a sync flush (byte
aligned, no end-of-stream bit) so that the segments joined behind one zlib header form one stream,
as pigz does. The Adler-32 of the whole stream is combined from the bands' own.

2-core AMD EPYC, the same pixels (``bench/decode_profile.py``'s images): 12 MP photo 0.25 s and
16.33 MB (Pillow level 1: 0.71 s, 16.33 MB); Kodak kodim05 12 ms and 817 KB (Pillow level 1:
30 ms, 793 KB).

Only the chunks Pillow writes for these images: IHDR, iCCP (when a profile is given), IDAT, IEND.
8-bit L, LA, RGB and RGBA; anything else is Pillow's to write.
"""
from __future__ import annotations

import struct
import threading
import zlib

import numpy as np

from .threads import available as available_threads

__all__ = ["MODES", "encode", "adler32_combine"]

#: Pillow mode -> (PNG colour type, channels).
MODES = {"L": (0, 1), "LA": (4, 2), "RGB": (2, 3), "RGBA": (6, 4)}
SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Raw bytes per band at most: bounds the memory in flight (a filtered band per thread) while each
#: band's fresh dictionary costs little (12 MP photo: +0.1% against 4 MiB bands, +0.4% at 256 KiB).
BAND_BYTES = 1 << 20
#: Bands at least, where each still gets MIN_BAND_BYTES, so that up to 8 threads share a small
#: image. The split depends on the image alone: the file is the same on every machine.
MIN_BANDS = 8
MIN_BAND_BYTES = 1 << 16
FILTER_UP = 2
_ADLER_MOD = 65521


def adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """The Adler-32 of A + B from those of A and B and B's length (zlib's ``adler32_combine``)."""
    rem = length2 % _ADLER_MOD
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_MOD
    sum1 = (sum1 + (adler2 & 0xFFFF) + _ADLER_MOD - 1) % _ADLER_MOD
    sum2 = ((adler1 >> 16) + (adler2 >> 16) + sum2 + _ADLER_MOD - rem) % _ADLER_MOD
    return (sum2 << 16) | sum1


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode(pixels: np.ndarray, mode: str, icc_profile: bytes | None = None, level: int = 2,
           threads: int | None = None) -> bytes:
    """A PNG file of ``pixels`` ((H, W) for L, (H, W, C) otherwise, uint8) in Pillow ``mode``
    (:data:`MODES`), with ``icc_profile`` as its iCCP chunk; zlib ``level`` 0-9, on ``threads``
    threads (default: the CPUs this process may use, or BBIMG_THREADS); the bytes do not depend on
    ``threads``."""
    if mode not in MODES:
        raise ValueError(f"cannot write mode {mode!r} as PNG here (only {', '.join(MODES)})")
    colour_type, channels = MODES[mode]
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or \
            (pixels.shape[2:] or (1,)) != (channels,) or (pixels.ndim == 2) != (channels == 1):
        raise ValueError(f"mode {mode} needs (H, W{'' if channels == 1 else f', {channels}'}) uint8 "
                         f"pixels, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    if not (0 < height < 2 ** 31 and 0 < width < 2 ** 28):  # a band (at least a row) fits a chunk
        raise ValueError(f"cannot write a {width}x{height} PNG here")
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)

    row_bytes = width * channels + 1
    threads = max(1, threads or available_threads())
    total = height * row_bytes
    count = max(-(-total // BAND_BYTES), min(MIN_BANDS, total // MIN_BAND_BYTES))
    edges = sorted({height * i // count for i in range(count)} | {height})
    bands = list(zip(edges[:-1], edges[1:]))
    compressed: list[bytes | None] = [None] * len(bands)
    adlers = [0] * len(bands)
    failure: list[BaseException] = []
    next_band = iter(range(len(bands)))
    lock = threading.Lock()

    def work() -> None:
        while not failure:
            with lock:
                i = next(next_band, None)
            if i is None:
                return
            try:
                r0, r1 = bands[i]
                band = np.empty((r1 - r0, row_bytes), np.uint8)
                band[:, 0] = FILTER_UP
                if r0 == 0:  # the first row has no row above: Up leaves it as it is
                    band[0, 1:] = rows[0]
                    np.subtract(rows[1:r1], rows[:r1 - 1], out=band[1:, 1:])
                else:
                    np.subtract(rows[r0:r1], rows[r0 - 1:r1 - 1], out=band[:, 1:])
                deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
                last = i == len(bands) - 1
                compressed[i] = deflate.compress(band) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
                adlers[i] = zlib.adler32(band)
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
                failure.append(exc)

    helpers = [threading.Thread(target=work, name="bbimg-png") for _ in range(min(threads, len(bands)) - 1)]
    for helper in helpers:
        helper.start()
    try:
        work()
        for helper in helpers:
            helper.join()
    except BaseException as exc:  # Ctrl-C while waiting: the helpers stop after their band
        failure.append(exc)
        for helper in helpers:
            helper.join()
    if failure:
        raise failure[0]

    adler = 1  # the Adler-32 of no bytes
    for (r0, r1), band_adler in zip(bands, adlers):
        adler = adler32_combine(adler, band_adler, (r1 - r0) * row_bytes)
    # CMF 0x78: deflate, 32 KiB window; FLG 0x01 makes the 16-bit header a multiple of 31
    # (no preset dictionary; the level hint is informative only).
    idat = [b"\x78\x01" + compressed[0], *compressed[1:]]
    idat[-1] += struct.pack(">I", adler)
    parts = [SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if icc_profile:
        parts.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    parts += [_chunk(b"IDAT", data) for data in idat]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
