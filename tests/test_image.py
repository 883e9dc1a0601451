"""Input images of every mode -> what is coded (bbimg.image), and the lossless alpha coder (bbimg.alpha)."""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from bbimg import alpha as alpha_coder
from bbimg.format import BbiError
from bbimg.image import (COLOUR_GREY, COLOUR_RGB, BbimgWarning, fill_transparent, prepare, restore,
                         source_bit_depth)

RNG = np.random.default_rng(0)
RGBA = RNG.integers(0, 256, (6, 9, 4), dtype=np.uint8)
RGBA[0, 0, 3], RGBA[0, 1, 3] = 0, 255  # a fully transparent and an opaque pixel at least


def prepared(image: Image.Image):
    """prepare() and the BbimgWarning messages it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare(image)
    return prep, [str(w.message) for w in caught if issubclass(w.category, BbimgWarning)]


def png16(width: int, height: int, colour_type: int, samples: np.ndarray, trns: bytes | None = None) -> bytes:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit RGB/RGBA/LA)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    extra = chunk(b"tRNS", trns) if trns is not None else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + \
        chunk(b"IEND", b"")


# ---------------------------------------------------------------- prepare / restore, every mode

def test_rgba_keeps_visible_colour_and_alpha_exactly():
    prep, warned = prepared(Image.fromarray(RGBA, "RGBA"))
    assert warned == [] and prep.colour == COLOUR_RGB and prep.bit_depth == 8 and prep.had_alpha
    visible = RGBA[:, :, 3] > 0
    assert np.array_equal(prep.pixels[visible], RGBA[:, :, :3][visible])
    assert np.array_equal(prep.alpha, RGBA[:, :, 3]) and prep.alpha.dtype == np.uint8
    out = np.asarray(restore(prep.pixels, prep.colour, alpha=prep.alpha))
    assert out.shape == (6, 9, 4) and np.array_equal(out[visible], RGBA[visible])
    assert np.array_equal(out[:, :, 3], RGBA[:, :, 3])
    exact = prepare(Image.fromarray(RGBA, "RGBA"), exact=True)
    assert np.array_equal(exact.pixels, RGBA[:, :, :3])
    assert np.array_equal(np.asarray(restore(exact.pixels, exact.colour, alpha=exact.alpha)), RGBA)


def test_colour_under_transparent_pixels_is_filled_smoothly():
    """The visible colour extends into the invisible part, replacing the junk there."""
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[:, :, :3] = RNG.integers(0, 256, (32, 48, 3))  # junk
    rgba[:, :26, :3] = (200, 100, 50)
    rgba[:, :24, 3] = 255
    rgba[:, 24:26, 3] = 1  # barely visible, still kept as it is
    prep = prepare(Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(prep.pixels[:, :26], rgba[:, :26, :3])
    assert (np.abs(prep.pixels[:, 26:].astype(int) - (200, 100, 50)) <= 60).all()
    assert np.abs(np.diff(prep.pixels[:, 26:].astype(int), axis=1)).max() <= 40  # smooth, not junk
    invisible = np.zeros((3, 4, 4), np.uint8)
    invisible[:, :, :3] = 77
    empty = prepare(Image.fromarray(invisible, "RGBA"))
    assert (empty.pixels == 0).all() and (empty.alpha == 0).all()


@pytest.mark.parametrize("h,w", [(1, 1), (1, 6), (5, 1), (7, 9), (33, 64)])
def test_fill_keeps_visible_pixels(h, w):
    pixels = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = (RNG.random((h, w)) < 0.4).astype(np.uint8) * RNG.integers(1, 256, (h, w), dtype=np.uint8)
    out = fill_transparent(pixels, alpha)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    assert np.array_equal(out[alpha > 0], pixels[alpha > 0])
    assert fill_transparent(pixels, np.full((h, w), 3, np.uint8)) is pixels  # nothing to fill


def test_la_keeps_grey_and_alpha_exactly():
    la = RGBA[:, :, 2:]
    prep, warned = prepared(Image.fromarray(la, "LA"))
    visible = la[:, :, 1] > 0
    assert prep.pixels[~visible].size  # some grey is filled, the rest kept
    assert np.array_equal(prep.pixels[visible][:, 0], la[:, :, 0][visible])
    prep = prepare(Image.fromarray(la, "LA"), exact=True)
    assert warned == [] and prep.colour == COLOUR_GREY and prep.pixels.shape == (6, 9, 3)
    assert all(np.array_equal(prep.pixels[:, :, c], la[:, :, 0]) for c in range(3))
    assert np.array_equal(prep.alpha, la[:, :, 1])
    out = restore(prep.pixels, prep.colour, alpha=prep.alpha)
    assert out.mode == "LA" and np.array_equal(np.asarray(out), la)


def _with_transparency(mode: str) -> Image.Image:
    im = Image.fromarray(RGBA[:, :, :3], "RGB").convert(mode)
    key = im.getpixel((0, 0))
    im.info["transparency"] = key
    return im


@pytest.mark.parametrize("make,colour,alpha,restored", [
    (lambda: Image.fromarray(RGBA[:, :, :3], "RGB"), COLOUR_RGB, False, "RGB"),
    (lambda: Image.fromarray(RGBA[:, :, 0], "L"), COLOUR_GREY, False, "L"),
    (lambda: Image.fromarray(RGBA[:, :, 0] > 127), COLOUR_GREY, False, "L"),
    (lambda: Image.fromarray(RGBA[:, :, :3], "RGB").convert("P", palette=Image.ADAPTIVE), COLOUR_RGB, False, "RGB"),
    (lambda: Image.fromarray(RGBA, "RGBA").convert("P"), COLOUR_RGB, True, "RGBA"),  # P + transparency
    (lambda: Image.fromarray(RGBA, "RGBA").convert("PA"), COLOUR_RGB, True, "RGBA"),
    (lambda: Image.fromarray(RGBA, "RGBA").convert("RGBa"), COLOUR_RGB, True, "RGBA"),
    (lambda: Image.fromarray(RGBA[:, :, 2:], "LA").convert("La"), COLOUR_GREY, True, "LA"),
    (lambda: _with_transparency("RGB"), COLOUR_RGB, True, "RGBA"),
    (lambda: _with_transparency("L"), COLOUR_GREY, True, "LA"),
    (lambda: Image.fromarray(RGBA[:, :, :3], "RGB").convert("CMYK"), COLOUR_RGB, False, "RGB"),
    (lambda: Image.fromarray(RGBA[:, :, :3], "RGB").convert("YCbCr"), COLOUR_RGB, False, "RGB"),
])
def test_modes(make, colour, alpha, restored):
    image = make()
    prep, warned = prepared(image)
    assert warned == [] and prep.colour == colour and prep.had_alpha is alpha
    assert prep.pixels.shape == (6, 9, 3) and prep.pixels.dtype == np.uint8
    if alpha:
        expected = np.asarray(image.convert("LA" if colour == COLOUR_GREY else "RGBA"))[:, :, -1]
        assert np.array_equal(prep.alpha, expected)
    else:
        assert prep.alpha is None
    out = restore(prep.pixels, prep.colour, alpha=prep.alpha)
    assert out.mode == restored and out.size == (9, 6)


def test_transparency_key_gives_binary_alpha():
    prep, _ = prepared(_with_transparency("RGB"))
    key = tuple(RGBA[0, 0, :3])
    expected = np.where((RGBA[:, :, :3] == key).all(axis=2), 0, 255)
    assert np.array_equal(prep.alpha, expected)


@pytest.mark.parametrize("mode,depth,message", [
    ("I;16", 16, "16-bit samples coded at 8 bits"),
    ("I", 32, "32-bit samples coded at 8 bits"),
    ("F", 32, "32-bit float samples coded at 8 bits"),
])
def test_deep_grey_warns_and_is_scaled(mode, depth, message):
    grey16 = (RGBA[:, :, 0].astype(np.uint16) * 257)
    image = Image.fromarray(grey16) if mode == "I;16" else Image.fromarray(grey16.astype(
        np.int32 if mode == "I" else np.float32), mode)
    prep, warned = prepared(image)
    assert warned == [message] and prep.bit_depth == depth and prep.colour == COLOUR_GREY and prep.alpha is None
    assert np.array_equal(prep.pixels[:, :, 1], RGBA[:, :, 0])


@pytest.mark.parametrize("colour_type,channels,colour,alpha", [
    (2, 3, COLOUR_RGB, False), (6, 4, COLOUR_RGB, True), (4, 2, COLOUR_GREY, True), (0, 1, COLOUR_GREY, False),
])
def test_16_bit_png_warns_and_keeps_alpha(colour_type, channels, colour, alpha):
    samples = RNG.integers(0, 65536, (6, 9, channels))
    image = Image.open(io.BytesIO(png16(9, 6, colour_type, samples)))
    assert source_bit_depth(image) == 16
    prep, warned = prepared(image)
    assert warned == ["16-bit samples coded at 8 bits"] and prep.bit_depth == 16
    assert prep.colour == colour and prep.had_alpha is alpha
    if alpha:  # the high byte of each 16-bit alpha sample (Pillow's reduction)
        assert np.array_equal(prep.alpha, (samples[:, :, -1] >> 8).astype(np.uint8))
    out = restore(prep.pixels, prep.colour, alpha=prep.alpha)
    assert out.mode == {(COLOUR_RGB, False): "RGB", (COLOUR_RGB, True): "RGBA", (COLOUR_GREY, True): "LA",
                        (COLOUR_GREY, False): "L"}[colour, alpha]


def test_16_bit_grey_with_transparency_key():
    samples = RNG.integers(0, 65536, (6, 9, 1))
    samples[2, 3] = 4242
    image = Image.open(io.BytesIO(png16(9, 6, 0, samples, trns=struct.pack(">H", 4242))))
    prep, warned = prepared(image)
    assert warned == ["16-bit samples coded at 8 bits"] and prep.colour == COLOUR_GREY
    assert np.array_equal(prep.alpha, np.where(samples[:, :, 0] == 4242, 0, 255))


def test_16_bit_rgb_png_depth_is_known_only_before_load():
    """Pillow gives 16-bit RGB PNG as mode RGB: callers must prepare() (or ask) before load()."""
    image = Image.open(io.BytesIO(png16(9, 6, 2, RNG.integers(0, 65536, (6, 9, 3)))))
    assert source_bit_depth(image) == 16
    image.load()
    assert source_bit_depth(image) == 8


def tiff16_rgb(samples: np.ndarray) -> bytes:
    """A 16-bit RGB TIFF (one strip, little-endian), written byte by byte."""
    h, w, _ = samples.shape
    pixels = samples.astype("<u2").tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 8 + 2 + 10 * 12 + 4), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 8 + 2 + 10 * 12 + 4 + 6), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)),
               (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<3H", 16, 16, 16) + pixels


def test_16_bit_tiff_rgb_warns_even_after_load():
    samples = RNG.integers(0, 65536, (6, 9, 3))
    image = Image.open(io.BytesIO(tiff16_rgb(samples)))
    image.load()
    assert image.mode == "RGB" and source_bit_depth(image) == 16
    prep, warned = prepared(image)
    assert warned == ["16-bit samples coded at 8 bits"] and prep.bit_depth == 16
    assert np.array_equal(prep.pixels, (samples >> 8).astype(np.uint8))


def test_8_bit_inputs_do_not_warn():
    for mode in ("RGB", "L", "RGBA", "LA", "P", "1", "CMYK"):
        buf = io.BytesIO()
        fmt = "TIFF" if mode == "CMYK" else "PNG"
        Image.fromarray(RGBA, "RGBA").convert(mode).save(buf, fmt)
        _, warned = prepared(Image.open(buf))
        assert warned == [], mode


def _gif(frames: int) -> Image.Image:
    pictures = [Image.fromarray(np.full((6, 9, 3), 40 * i, np.uint8), "RGB") for i in range(frames)]
    buf = io.BytesIO()
    pictures[0].save(buf, "GIF", save_all=True, append_images=pictures[1:], duration=50)
    return Image.open(buf)


def test_animated_input_warns_and_codes_the_first_frame():
    image = _gif(3)
    image.seek(2)
    prep, warned = prepared(image)
    assert warned == ["3 frames (animated or multi-page): only the first is coded"]
    assert (prep.pixels == 0).all()
    _, warned = prepared(_gif(1))
    assert warned == []


def test_multi_page_tiff_warns():
    buf = io.BytesIO()
    pages = [Image.fromarray(RGBA[:, :, :3], "RGB"), Image.fromarray(RGBA[:, :, 1:], "RGB")]
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    prep, warned = prepared(Image.open(buf))
    assert warned == ["2 frames (animated or multi-page): only the first is coded"]
    assert np.array_equal(prep.pixels, RGBA[:, :, :3])


def test_exif_orientation_turns_alpha_too():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(RGBA, "RGBA").save(buf, "PNG", exif=exif.tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prep = prepare(Image.open(buf), exact=True)
    upright = np.asarray(Image.fromarray(RGBA, "RGBA").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(prep.pixels, upright[:, :, :3]) and np.array_equal(prep.alpha, upright[:, :, 3])
    reread = Image.Exif()
    reread.load(prep.exif)
    assert reread[0x0112] == 1
    image = Image.open(buf)
    first, second = prepare(image), prepare(image)  # the caller's image is left as it was
    assert image.getexif()[0x0112] == 6 and np.array_equal(first.pixels, second.pixels)
    assert first.pixels.shape == (9, 6, 3)


def test_restore_checks_the_alpha_plane():
    pixels = RGBA[:, :, :3]
    for bad in (np.zeros((6, 8), np.uint8), np.zeros((6, 9), np.uint16), np.zeros((6, 9, 1), np.uint8)):
        with pytest.raises(ValueError, match="alpha"):
            restore(pixels, COLOUR_RGB, alpha=bad)
    out = restore(pixels, COLOUR_RGB, b"icc", b"MM\0*", alpha=RGBA[:, :, 3])
    assert out.info["icc_profile"] == b"icc" and out.info["exif"] == b"MM\0*"


# ---------------------------------------------------------------- the alpha coder

@st.composite
def planes(draw) -> np.ndarray:
    h, w = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "few values", "mask", "smooth", "constant"]))
    if kind == "noise":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "few values":
        return rng.choice(rng.integers(0, 256, 3).astype(np.uint8), (h, w))
    if kind == "mask":
        return np.where(rng.random((h, w)) < 0.3, 0, 255).astype(np.uint8)
    if kind == "smooth":
        y, x = np.mgrid[0:h, 0:w]
        return ((x * 7 + y * 3 + rng.integers(0, 3, (h, w))) % 256).astype(np.uint8)
    return np.full((h, w), rng.integers(0, 256), np.uint8)


@settings(max_examples=120, deadline=None)
@given(planes())
def test_alpha_round_trip(plane):
    payload = alpha_coder.encode_alpha(plane)
    h, w = plane.shape
    out = alpha_coder.decode_alpha(payload, w, h)
    assert out.dtype == np.uint8 and out.shape == (h, w) and np.array_equal(out, plane)
    assert len(payload) <= 1 + plane.size  # never more than a byte over the raw plane
    if (plane == plane.flat[0]).all():
        assert payload == bytes([alpha_coder.CODER_CONSTANT, plane.flat[0]])


def test_alpha_coder_choices():
    y, x = np.mgrid[0:64, 0:80]
    smooth = ((x + y) * 2).astype(np.uint8)
    payload = alpha_coder.encode_alpha(smooth)
    assert payload[0] == alpha_coder.CODER_WEBP_TILES and len(payload) < smooth.size // 10
    noise = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
    assert alpha_coder.encode_alpha(noise) == bytes([alpha_coder.CODER_RAW]) + noise.tobytes()
    assert alpha_coder.encode_alpha(np.full((1, 1), 9, np.uint8)) == b"\x00\x09"


@pytest.mark.parametrize("shape", [(3, 2 * alpha_coder.TILE + 5), (alpha_coder.TILE + 1, 3)])
def test_alpha_round_trip_across_tiles(shape):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    plane = ((x // 3 + y * 5) % 251).astype(np.uint8)
    payload = alpha_coder.encode_alpha(plane)
    assert payload[0] == alpha_coder.CODER_WEBP_TILES
    assert np.array_equal(alpha_coder.decode_alpha(payload, shape[1], shape[0]), plane)


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.uint8), np.zeros((3, 3), np.uint16), np.zeros(5, np.uint8),
                                 np.zeros((2, 2, 1), np.uint8)])
def test_alpha_encoder_rejects_what_is_not_a_plane(bad):
    with pytest.raises(ValueError):
        alpha_coder.encode_alpha(bad)


def _webp_payload() -> tuple[bytes, np.ndarray]:
    y, x = np.mgrid[0:20, 0:30]
    plane = ((x * 9 + y * 4) % 256).astype(np.uint8)
    payload = alpha_coder.encode_alpha(plane)
    assert payload[0] == alpha_coder.CODER_WEBP_TILES
    return payload, plane


def _with_vp8l_size(payload: bytes, w: int, h: int) -> bytes:
    b = bytearray(payload)
    bits = int.from_bytes(b[7:11], "little")  # coder 1, filter 1, length 4, then the VP8L header
    bits = (bits & ~0xFFFFFFF) | (w - 1) | ((h - 1) << 14)
    b[7:11] = bits.to_bytes(4, "little")
    return bytes(b)


def test_alpha_decoder_rejects_malformed_payloads():
    payload, _ = _webp_payload()
    length = struct.unpack_from("<I", payload, 2)[0]
    cases = {
        "empty": b"",
        "unknown coder": b"\x07\x00",
        "constant too long": b"\x00\x01\x02",
        "constant too short": b"\x00",
        "raw wrong size": b"\x02" + bytes(599),
        "truncated tile header": payload[:4],
        "unknown filter": payload[:1] + b"\x04" + payload[2:],
        "tile past the end": payload[:2] + struct.pack("<I", length + 1) + payload[6:],
        "trailing bytes": payload + b"\0",
        "not VP8L": payload[:6] + b"\x00" + payload[7:],
        "bad VP8L data": payload[:6 + 5] + bytes(length - 5),
        "short VP8L": payload[:2] + struct.pack("<I", 3) + payload[6:9],
        "declared size": _with_vp8l_size(payload, 31, 20),
        "huge declared size": _with_vp8l_size(payload, 16384, 16384),
    }
    for name, data in cases.items():
        try:
            alpha_coder.decode_alpha(data, 30, 20)
        except BbiError as exc:
            assert str(exc).startswith("corrupt file: alpha plane: "), (name, exc)
        else:
            pytest.fail(f"{name}: accepted")


def test_alpha_decoder_checks_the_dimensions_it_is_given():
    payload, plane = _webp_payload()
    assert np.array_equal(alpha_coder.decode_alpha(payload, 30, 20), plane)
    for w, h in ((30, 21), (29, 20), (20, 30), (30 + alpha_coder.TILE, 20)):
        with pytest.raises(BbiError, match="corrupt file"):
            alpha_coder.decode_alpha(payload, w, h)
    raw = alpha_coder.encode_alpha(RNG.integers(0, 256, (4, 4), dtype=np.uint8))
    with pytest.raises(BbiError, match="corrupt file"):
        alpha_coder.decode_alpha(raw, 4, 5)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_alpha_decoder_never_fails_otherwise_on_damaged_payloads(data):
    payload, plane = _webp_payload()
    b = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(b) - 1))
        b[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    try:
        out = alpha_coder.decode_alpha(bytes(b[:cut]), 30, 20)
    except BbiError as exc:
        assert str(exc).startswith("corrupt file: alpha plane: ")
    else:
        assert out.shape == (20, 30) and out.dtype == np.uint8
