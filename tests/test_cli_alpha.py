"""Through the command line as a user meets it: alpha is kept exactly, nothing is dropped silently
(16-bit and animated input warn), and ``bbimg info`` says what ``bbimg decode`` gives back."""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bbimg import format as bbi
from bbimg.model_files import find_weights, weights_sha256
from bbimg.cli.main import main
from conftest import smooth_image


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("bbimg: warning:")]


def rgba_image(h: int = 40, w: int = 56) -> np.ndarray:
    """Colour plus an alpha plane with every kind of region: transparent, opaque, soft edges."""
    rgb = smooth_image(np.random.default_rng(5), h, w)
    y, x = np.mgrid[0:h, 0:w]
    alpha = np.clip(255 * (1.6 - np.hypot(x - w / 2, y - h / 2) / (h / 4)), 0, 255).astype(np.uint8)
    alpha[:4] = 0
    alpha[-4:, :10] = 255
    return np.dstack([rgb, alpha])


def png16_rgba(samples: np.ndarray) -> bytes:
    """A 16-bit RGBA PNG written byte by byte (Pillow cannot write one)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    h, w, _ = samples.shape
    rows = samples.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def round_trip(tmp_path, image: Image.Image | bytes, model: str, name: str = "x"):
    """encode then decode through the CLI; (encode result, decoded image, info --json facts)."""
    src = tmp_path / f"{name}.png"
    if isinstance(image, bytes):
        src.write_bytes(image)
    else:
        image.save(src)
    encoded = run("encode", src, tmp_path / f"{name}.bbi", "--model", model)
    assert encoded.exit_code == 0, encoded.output
    decoded = run("decode", tmp_path / f"{name}.bbi", tmp_path / f"{name}-out.png", "--quiet")
    assert decoded.exit_code == 0, decoded.output
    described = run("info", tmp_path / f"{name}.bbi", "--json")
    assert described.exit_code == 0, described.output
    with Image.open(tmp_path / f"{name}-out.png") as out:
        out.load()
    return encoded, out, json.loads(described.stdout)


# The tests below need bbimg.codec to write and read the ALPH section, warn through prepare(), and
# report bbimg.format.decoded_description() from info().


def test_rgba_png_keeps_alpha_exactly(tiny_model, tmp_path):
    rgba = rgba_image()
    encoded, out, facts = round_trip(tmp_path, Image.fromarray(rgba, "RGBA"), tiny_model)
    assert warnings_of(encoded) == []
    assert out.mode == "RGBA" and out.size == (56, 40)
    assert np.array_equal(np.asarray(out)[:, :, 3], rgba[:, :, 3])
    assert facts["version"] == "%d.%d" % bbi.VERSION and "ALPH" in facts["section_bytes"]
    assert (facts["mode"], facts["bit_depth"]) == ("RGBA", 8)


def test_la_png_keeps_alpha_exactly(tiny_model, tmp_path):
    la = rgba_image()[:, :, 2:]
    _, out, facts = round_trip(tmp_path, Image.fromarray(la, "LA"), tiny_model)
    assert out.mode == "LA" and np.array_equal(np.asarray(out)[:, :, 1], la[:, :, 1])
    assert (facts["mode"], facts["bit_depth"]) == ("LA", 8)


def test_palette_with_transparency_decodes_as_rgba(tiny_model, tmp_path):
    pal = Image.fromarray(rgba_image()[:, :, :3], "RGB").convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    expected = np.asarray(pal.convert("RGBA"))[:, :, 3]
    _, out, facts = round_trip(tmp_path, pal, tiny_model)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[:, :, 3], expected)
    assert facts["mode"] == "RGBA"


def test_opaque_images_carry_no_alpha(tiny_model, tmp_path):
    _, out, facts = round_trip(tmp_path, Image.fromarray(rgba_image()[:, :, :3], "RGB"), tiny_model)
    assert out.mode == "RGB" and facts["version"] == "%d.%d" % bbi.VERSION and "ALPH" not in facts["section_bytes"]
    assert (facts["mode"], facts["bit_depth"]) == ("RGB", 8)


def test_16_bit_png_warns_and_quiet_silences_it(tiny_model, tmp_path):
    samples = np.random.default_rng(1).integers(0, 65536, (24, 32, 4))
    data = png16_rgba(samples)
    encoded, out, facts = round_trip(tmp_path, data, tiny_model, "deep")
    assert warnings_of(encoded) == [f"bbimg: warning: {tmp_path / 'deep.png'}: 16-bit samples coded at 8 bits"]
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[:, :, 3], samples[:, :, 3] >> 8)
    assert (facts["mode"], facts["bit_depth"], facts["source_bit_depth"]) == ("RGBA", 8, 16)
    quiet = run("encode", tmp_path / "deep.png", tmp_path / "deep2.bbi", "--model", tiny_model, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_animated_gif_warns_and_codes_the_first_frame(tiny_model, tmp_path):
    frames = [Image.fromarray(np.full((20, 24, 3), 60 * i, np.uint8), "RGB") for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=40)
    encoded = run("encode", tmp_path / "anim.gif", tmp_path / "anim.bbi", "--model", tiny_model)
    assert encoded.exit_code == 0, encoded.output
    assert warnings_of(encoded) == [f"bbimg: warning: {tmp_path / 'anim.gif'}: "
                                    "3 frames (animated or multi-page): only the first is coded"]
    quiet = run("encode", tmp_path / "anim.gif", tmp_path / "anim.bbi", "--model", tiny_model, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "I;16", "CMYK"])
def test_info_reports_what_decode_returns(tiny_model, tmp_path, mode):
    rgba = Image.fromarray(rgba_image(24, 32), "RGBA")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgba.convert("L"), np.uint16) * 257)
    else:
        image = rgba.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "TIFF" if mode == "CMYK" else "PNG", icc_profile=b"\0\0\0\x10fake-icc" if mode == "RGB" else None)
    _, out, facts = round_trip(tmp_path, buf.getvalue(), tiny_model, "m")
    assert facts["mode"] == out.mode and facts["bit_depth"] == 8
    assert (facts["width"], facts["height"]) == out.size
    assert facts["icc_profile"] == ("icc_profile" in out.info)
    assert facts["orientation"] == 1


def test_files_from_before_alpha_still_decode_as_they_did(tiny_model, tmp_path):
    """A file of an RGBA image without ALPH (as before 1.2: its alpha was flattened) decodes as RGB,
    and info says so."""
    from bbimg import codec
    data = codec.encode(Image.fromarray(rgba_image(), "RGBA"), 75, model=tiny_model)
    c = bbi.read(data)
    header = dataclasses.replace(c.header, model_name=tiny_model,
                                 weights_hash=weights_sha256(find_weights(tiny_model))[:16])
    old = bbi.write(bbi.Container(header, tuple(s for s in c.sections if s.tag != "ALPH")), version=1)
    assert old[8:10] == b"\x01\x03"  # the 1.x layout with the 1.3 block plans; no ALPH
    (tmp_path / "old.bbi").write_bytes(old)
    assert run("decode", tmp_path / "old.bbi", tmp_path / "old.png", "--quiet").exit_code == 0
    with Image.open(tmp_path / "old.png") as out:
        assert out.mode == "RGB"
    facts = json.loads(run("info", tmp_path / "old.bbi", "--json").stdout)
    assert (facts["mode"], facts["source_mode"]) == ("RGB", "RGBA")


def test_corrupt_alpha_is_one_line(tiny_model, tmp_path):
    Image.fromarray(rgba_image(), "RGBA").save(tmp_path / "a.png")
    assert run("encode", tmp_path / "a.png", tmp_path / "a.bbi", "--model", tiny_model, "--quiet").exit_code == 0
    c = bbi.read((tmp_path / "a.bbi").read_bytes())
    broken = tuple(bbi.Section(s.tag, b"\x01\x00\x05" if s.tag == "ALPH" else s.payload, s.required)
                   for s in c.sections)
    (tmp_path / "b.bbi").write_bytes(bbi.write(bbi.Container(c.header, broken)))
    result = run("decode", tmp_path / "b.bbi", tmp_path / "b.png")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bbimg: error:") and "corrupt file: alpha plane" in lines[0]
    assert not (tmp_path / "b.png").exists()
