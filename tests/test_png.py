"""bbimg.png: the decoder's PNG writer, read back by Pillow and by zlib."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from bbimg import png


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, payload) of every chunk, checking each CRC and that nothing follows IEND."""
    assert data[:8] == png.SIGNATURE
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        tag, payload = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(tag + payload)
        out.append((tag, payload))
        at += 12 + length
    assert at == len(data) and out[-1] == (b"IEND", b"")
    return out


def shaped(mode: str, height: int, width: int) -> tuple[int, ...]:
    channels = png.MODES[mode][1]
    return (height, width) if channels == 1 else (height, width, channels)


@st.composite
def images(draw):
    mode = draw(st.sampled_from(sorted(png.MODES)))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    pixels = draw(arrays(np.uint8, shaped(mode, height, width)))
    return mode, pixels


@settings(max_examples=60, deadline=None)
@given(images(), st.integers(1, 3), st.sampled_from([1, 64, 1 << 20]),
       st.one_of(st.none(), st.binary(min_size=1, max_size=300)), st.integers(0, 9))
def test_pillow_reads_back_the_pixels_mode_and_profile(image, threads, band_bytes, icc, level):
    mode, pixels = image
    old = png.BAND_BYTES
    png.BAND_BYTES = band_bytes  # 1 byte: a band per row; 1 MiB: as few bands as the threads need
    try:
        data = png.encode(pixels, mode, icc_profile=icc, level=level, threads=threads)
    finally:
        png.BAND_BYTES = old
    tags = [tag for tag, _ in chunks(data)]
    assert tags[0] == b"IHDR" and set(tags[1:-1]) <= {b"iCCP", b"IDAT"} and tags.count(b"iCCP") == bool(icc)
    with Image.open(io.BytesIO(data)) as out:
        out.load()
        assert out.mode == mode and out.size == (pixels.shape[1], pixels.shape[0])
        assert np.array_equal(np.asarray(out), pixels)
        assert out.info.get("icc_profile") == icc


def test_the_bands_form_one_zlib_stream_of_up_filtered_rows():
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (300, 50, 3), np.uint8)
    old = png.BAND_BYTES
    png.BAND_BYTES = 20 * 151  # 20 rows of 151 bytes a band: 15 bands
    try:
        data = png.encode(pixels, "RGB", threads=2)
    finally:
        png.BAND_BYTES = old
    idat = [payload for tag, payload in chunks(data) if tag == b"IDAT"]
    assert len(idat) == 15
    stream = zlib.decompressobj()
    raw = stream.decompress(b"".join(idat))
    assert stream.eof and stream.unused_data == b""  # the Adler-32 checked, nothing after it
    rows = np.frombuffer(raw, np.uint8).reshape(300, 151)
    assert (rows[:, 0] == png.FILTER_UP).all()
    flat = pixels.reshape(300, 150)
    assert np.array_equal(rows[0, 1:], flat[0])
    assert np.array_equal(rows[1:, 1:], flat[1:] - flat[:-1])  # uint8: modulo 256


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=70000))
def test_adler32_combine_matches_zlib(first, second):
    assert png.adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == \
        zlib.adler32(first + second)


def test_adler32_combine_at_the_modulus_edges():
    ones = b"\xff" * 65521 * 3
    for cut in (0, 1, 65520, 65521, 65522, 2 * 65521):
        assert png.adler32_combine(zlib.adler32(ones[:cut]), zlib.adler32(ones[cut:]), len(ones) - cut) == \
            zlib.adler32(ones)


@pytest.mark.parametrize("mode, pixels", [
    ("RGB", np.zeros((4, 4), np.uint8)),          # L-shaped pixels called RGB
    ("L", np.zeros((4, 4, 1), np.uint8)),         # a channel axis L does not have
    ("RGBA", np.zeros((4, 4, 3), np.uint8)),
    ("RGB", np.zeros((4, 4, 3), np.uint16)),
    ("RGB", np.zeros((0, 4, 3), np.uint8)),
    ("P", np.zeros((4, 4), np.uint8)),
    ("I;16", np.zeros((4, 4), np.uint16)),
])
def test_what_it_cannot_write_is_refused(mode, pixels):
    with pytest.raises(ValueError):
        png.encode(pixels, mode)


def test_a_failure_in_a_band_reaches_the_caller(monkeypatch):
    class Broken:
        def __init__(self, *args):
            pass

        def compress(self, data):
            raise MemoryError

    monkeypatch.setattr(png.zlib, "compressobj", Broken)
    with pytest.raises(MemoryError):
        png.encode(np.zeros((64, 64, 3), np.uint8), "RGB", threads=2)


def test_ctrl_c_stops_the_helper_threads(monkeypatch):
    import threading

    real = zlib.compressobj

    def interrupted_in_the_main_thread(*args):
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(png.zlib, "compressobj", interrupted_in_the_main_thread)
    monkeypatch.setattr(png, "BAND_BYTES", 1)  # a band per row: the helpers would have plenty left
    with pytest.raises(KeyboardInterrupt):
        png.encode(np.zeros((400, 64, 3), np.uint8), "RGB", threads=3)
    assert not any(t.name == "bbimg-png" and t.is_alive() for t in threading.enumerate())


def test_the_file_does_not_depend_on_the_threads():
    pixels = np.random.default_rng(3).integers(0, 256, (512, 768, 3), np.uint8)  # a Kodak-sized image
    data = png.encode(pixels, "RGB", threads=1)
    assert all(png.encode(pixels, "RGB", threads=n) == data for n in (2, 3, 64))
    idat = [payload for tag, payload in chunks(data) if tag == b"IDAT"]
    assert len(idat) == png.MIN_BANDS  # 1.2 MB: 8 bands of 64 rows, for up to 8 threads
    with Image.open(io.BytesIO(data)) as out:
        assert np.array_equal(np.asarray(out), pixels)
