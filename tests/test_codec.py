import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image

import bbimg
from bbimg import codec
from bbimg.format import BbiError, read_header


def _enc(image, model, **kw):
    return codec.encode(image, kw.pop("quality", 50), model=model, **kw)


@pytest.mark.parametrize("w,h", [(1, 1), (13, 7), (3, 2000), (2000, 3), (100, 300)])
def test_odd_sizes_round_trip(tiny_model, w, h):
    rng = np.random.default_rng(w * 31 + h)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    data = _enc(image, tiny_model)
    out = codec.decode(data)
    assert out.size == (w, h) and out.mode == "RGB"
    header = read_header(data)
    assert (header.width, header.height) == (w, h)


@pytest.mark.parametrize("mode,expected", [
    ("RGB", "RGB"), ("L", "L"), ("1", "L"), ("P", "RGB"), ("RGBA", "RGBA"), ("LA", "LA"),
    ("I;16", "L"), ("I", "L"), ("CMYK", "RGB"), ("YCbCr", "RGB"), ("F", "L"),
])
def test_input_modes(tiny_model, photo, mode, expected):
    if mode == "I;16":
        image = Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257))
        assert image.mode.startswith("I;16")
    elif mode == "P":
        image = photo.convert("P", palette=Image.ADAPTIVE)
    else:
        image = photo.convert(mode)
    out = codec.decode(_enc(image, tiny_model))
    assert out.mode == expected and out.size == photo.size


def test_alpha_survives_the_api_exactly(tiny_model, photo):
    rgba = np.dstack([np.asarray(photo), np.arange(photo.width * photo.height, dtype=np.uint8)
                      .reshape(photo.height, photo.width)])
    out = codec.decode(codec.encode(rgba, 40, model=tiny_model))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_icc_profile_and_exif_orientation(tiny_model, photo):
    icc = b"\x00\x00\x02\x0cfake-profile-bytes" * 4
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    photo.save(buf, format="PNG", icc_profile=icc, exif=exif.tobytes())
    out = codec.decode(_enc(Image.open(io.BytesIO(buf.getvalue())), tiny_model))
    assert out.size == (photo.height, photo.width)
    assert out.info.get("icc_profile") == icc


def _psnr(a, b):
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def test_decoding_survives_perturbed_prior(tiny_model, photo, monkeypatch):
    """Relative noise of 1e-5 on the decoder's prior parameters moves the output by < 0.01 dB."""
    data = _enc(photo, tiny_model, quality=90)
    clean = codec.decode(data)
    from bbimg.models import vae

    original = vae._split_gaussian
    gen = torch.Generator().manual_seed(0)

    def noisy(params, gain=1.0, scale_gain=1.0):
        g = original(params, gain, scale_gain)
        jitter = lambda t: t * (1 + 1e-5 * torch.randn(t.shape, generator=gen))  # noqa: E731
        return vae.Gaussian(jitter(g.mean), jitter(g.log_scale))

    monkeypatch.setattr(vae, "_split_gaussian", noisy)
    perturbed = codec.decode(data)
    assert abs(_psnr(photo, clean) - _psnr(photo, perturbed)) < 0.01
    assert np.abs(np.asarray(clean, int) - np.asarray(perturbed, int)).max() <= 1


def test_truncated_and_flipped_files_raise_bbi_error(tiny_model, photo):
    data = _enc(photo, tiny_model)
    rng = np.random.default_rng(0)
    for cut in sorted(set(rng.integers(0, len(data), 40).tolist()) | {0, len(data) - 1}):
        with pytest.raises(BbiError):
            codec.decode(data[:cut])
    for pos in rng.integers(0, len(data) * 8, 60):
        flipped = bytearray(data)
        flipped[pos // 8] ^= 1 << (pos % 8)
        with pytest.raises(BbiError):
            codec.decode(bytes(flipped))


def test_unknown_model_and_wrong_weights_are_reported(tiny_model, photo, tmp_path, monkeypatch):
    data = _enc(photo, tiny_model)
    import dataclasses
    from bbimg import format as bbi
    from bbimg.model_files import find_weights, weights_sha256
    c = bbi.read(data)  # the same file in the 1.x layout, which names its model
    v1 = bbi.write(bbi.Container(dataclasses.replace(c.header, model_name=tiny_model, weights_hash=weights_sha256(
        find_weights(tiny_model))[:16]), c.sections), version=1)
    from bbimg.models import registry
    monkeypatch.setattr(registry, "_cache", {})
    # Same name, different weights: the decoder must refuse rather than produce garbage.
    other = tmp_path / f"{tiny_model}.pt"
    import dataclasses
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.training.trainer import export_weights
    from conftest import TINY
    torch.manual_seed(99)
    m = HierarchicalVAE(VAEConfig(**TINY))
    export_weights({"config": dataclasses.asdict(m.cfg), "model": m.state_dict(), "step": 1}, other)
    monkeypatch.setenv("BBIMG_MODEL_PATH", str(tmp_path))
    with pytest.raises(BbiError, match="other weights"):
        codec.decode(v1)
    with pytest.raises(BbiError, match=f"needs model weights {c.header.weights_hash.hex()}, which are not installed"):
        codec.decode(data)  # 2.0 names the weights by their hash alone


def test_quality_orders_size(tiny_model, photo):
    sizes = [len(_enc(photo, tiny_model, quality=q)) for q in (1, 50, 100)]
    assert sizes == sorted(sizes)


def test_selection_rule_changes_the_pick_not_the_size(tiny_model, photo):
    # The rule is encoder-only: the plan, hence the file size, is the same; the indices differ,
    # and the header says which kind of pick was made (0 = deterministic, else the temperature).
    nearest = _enc(photo, tiny_model)
    sampled = _enc(photo, tiny_model, temperature=1.0)
    assert len(nearest) == len(sampled) and nearest != sampled
    assert read_header(nearest).temperature == 0.0 and read_header(sampled).temperature == 1.0
    for data in (nearest, sampled):
        assert codec.decode(data).size == photo.size
    with pytest.raises(ValueError, match="temperature"):
        _enc(photo, tiny_model, temperature=-1.0)


def test_public_api_and_pillow_plugin(tiny_model, photo, tmp_path):
    data = bbimg.encode(photo, quality=40, model=tiny_model)
    assert bbimg.check(data[:16]) is True
    assert bbimg.info(data)["width"] == photo.width
    assert bbimg.decode(data).size == photo.size
    path = tmp_path / "x.bbi"
    photo.save(path, quality=40, model=tiny_model)
    with Image.open(path) as im:
        assert im.format == "BBI" and im.size == photo.size
        im.load()
        assert im.mode == "RGB"
    with pytest.raises(ValueError):
        photo.save(tmp_path / "y.bbi", quality=0)


def test_bad_arguments_raise_value_error(tiny_model, photo):
    with pytest.raises(ValueError):
        codec.encode(photo, 0, model=tiny_model)
    with pytest.raises(ValueError):
        codec.encode(photo, 50, model="no-such-model")
    with pytest.raises(ValueError):
        codec.encode(photo, 50, model=tiny_model, bpp=-1)


def test_api_takes_paths_files_arrays_and_pil_images(tiny_model, photo, tmp_path):
    """What Pillow users pass: every form of the same image gives the same file, and every form of
    the same file decodes to the same image."""
    png = tmp_path / "in.png"
    photo.save(png)
    expected = bbimg.encode(photo, quality=40, model=tiny_model)
    with open(png, "rb") as f:
        from_file = bbimg.encode(f, quality=40, model=tiny_model)
    for source in (png, str(png), np.asarray(photo), png.read_bytes()):
        assert bbimg.encode(source, quality=40, model=tiny_model) == expected
    assert from_file == expected
    bbi_path = tmp_path / "x.bbi"
    bbi_path.write_bytes(expected)
    pixels = np.asarray(bbimg.decode(expected))
    with open(bbi_path, "rb") as f:
        assert np.array_equal(np.asarray(bbimg.decode(f)), pixels)
    for source in (bbi_path, str(bbi_path), bytearray(expected), memoryview(expected)):
        assert np.array_equal(np.asarray(bbimg.decode(source)), pixels)
    assert bbimg.info(str(bbi_path)) == bbimg.info(expected)


def test_wrong_types_say_what_is_accepted(tiny_model):
    with pytest.raises(TypeError, match="path, a binary file, a PIL image"):
        bbimg.encode(12, model=tiny_model)
    with pytest.raises(TypeError, match="path, a binary file or bytes"):
        bbimg.decode(3.5)
    with pytest.raises(TypeError, match="binary file"):
        bbimg.decode(io.StringIO("text"))


def test_decode_pixel_limit_refuses_before_any_work(tiny_model, photo, monkeypatch):
    data = bbimg.encode(photo, quality=40, model=tiny_model)
    pixels = photo.width * photo.height
    with pytest.raises(bbimg.ImageTooLargeError, match="above the decode limit"):
        bbimg.decode(data, max_pixels=pixels - 1)
    assert bbimg.decode(data, max_pixels=pixels).size == photo.size
    monkeypatch.setattr(codec, "MAX_DECODE_PIXELS", pixels - 1)  # the module setting is the default
    with pytest.raises(codec.ImageTooLargeError):
        bbimg.decode(data)
    assert issubclass(codec.ImageTooLargeError, BbiError)


def test_progress_reports_each_stage_in_order(tiny_model, photo):
    seen = []
    data = codec.encode(photo, 40, model=tiny_model, progress=seen.append)
    assert tuple(seen) == tuple(s for s in codec.ENCODE_STAGES if s != "refinement")  # default effort
    seen.clear()
    codec.encode(photo, 40, model=tiny_model, effort=8, progress=seen.append)
    assert tuple(seen) == codec.ENCODE_STAGES
    seen.clear()
    codec.decode(data, progress=seen.append)
    assert tuple(seen) == codec.DECODE_STAGES


def test_z_ratio_gain_is_a_parameter(tiny_model, photo):
    """The z level's block ratio is an encode option (no module global to patch): a finer z plan
    costs more z blocks."""
    stats = []
    codec.encode(photo, 60, model=tiny_model, z_ratio_gain=0.5, stats=stats)
    codec.encode(photo, 60, model=tiny_model, z_ratio_gain=3.0, stats=stats)
    assert stats[0].blocks != stats[1].blocks
