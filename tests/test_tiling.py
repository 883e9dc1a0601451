"""Tiling: every transform runs tile by tile on either back end, equal to the untiled computation,
in bounded pieces; a light install (no torch) encodes and decodes every size; clear errors where
torch is needed.

The receptive-field argument for the halos is in bbimg/tiling.py; these tests check it on the
shipped model's ONNX export (no torch needed) and on a tiny torch model. The 8192 x 8192 memory
and time figures come from bench/large_image.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bbimg import codec, runtime, tiling, transforms
from bbimg import format as bbi
from bbimg.model_files import DEFAULT_MODEL
from conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


class Recording:
    """A back end that records the spatial size of every call's input."""

    def __init__(self, backend):
        self._b, self.calls = backend, []
        self.name, self.sha256, self.stride = backend.name, backend.sha256, backend.stride

    def __getattr__(self, part):
        fn = getattr(self._b, part)

        def call(a, *rest):
            if part != "z_prior":
                self.calls.append((part, tuple(a.shape[-2:])))
            return fn(a, *rest)
        return call


@pytest.fixture(scope="module")
def ort():
    backend = runtime.load(DEFAULT_MODEL)
    if backend is None:
        pytest.skip("the shipped model's ONNX export or onnxruntime is not installed")
    return backend


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiling at every size, with small tiles: many seams in a small image."""
    monkeypatch.setattr(tiling, "THRESHOLD_PIXELS", 0)
    monkeypatch.setattr(tiling, "TILE_LATENTS", 4)   # 64-pixel analysis/synthesis tiles
    monkeypatch.setattr(tiling, "PRIOR_TILE", 2)     # 2 z positions: 128-pixel prior tiles


def test_tiles_partition_the_grid_with_clipped_halos():
    for n in (1, 5, 64, 65, 130):
        parts = tiling.tiles(n, 16, 3)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert all(max(lo - 3, 0) == elo and min(hi + 3, n) == ehi for lo, hi, elo, ehi in parts)


def test_map_tiles_assembles_what_a_pointwise_transform_gives_whole():
    grid = np.arange(2 * 7 * 9, dtype=np.float32).reshape(1, 2, 7, 9)
    up = lambda a: (np.repeat(np.repeat(a, 3, axis=2), 3, axis=3) * 2,)  # noqa: E731
    read = lambda r0, r1, c0, c1: grid[:, :, r0:r1, c0:c1]  # noqa: E731
    whole = tiling.map_tiles(up, read, 7, 9, scale=3, tile=None, halo=0)[0]
    assert np.array_equal(whole, up(grid)[0])
    for tile, halo in ((1, 0), (2, 1), (4, 3), (100, 2)):
        assert np.array_equal(tiling.map_tiles(up, read, 7, 9, scale=3, tile=tile, halo=halo)[0], whole)


def _max_rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def _halves(monkeypatch, **values):
    for name, value in values.items():
        monkeypatch.setattr(tiling, name, value)


@pytest.mark.parametrize("halo_name", ["PRIOR_HALO", "HALO_LATENTS"])
def test_tiled_transforms_equal_untiled_and_a_smaller_halo_shows_seams(ort, monkeypatch, halo_name):
    """Each transform of the shipped model (ONNX Runtime), tiled with the minimal halo the
    receptive fields need (2 coarse positions), equals the whole-image computation up to float
    summation order; one position less differs (so the tests can fail)."""
    rng = np.random.default_rng(0)
    tr = transforms.Transforms(ort)
    t = 0.6
    pixels = smooth_image(rng, 200, 330)                 # padded to 256 x 384: y 16 x 24, z 4 x 6
    y_mean, y_scale = tr.analysis_pixels(pixels, t)
    z_mean, z_scale = tr.hyper(y_mean, t)
    z = (z_mean + z_scale * rng.standard_normal(z_mean.shape)).astype(np.float32)
    py_mean, py_scale = tr.y_prior(z, t)
    x_hat = tr.synthesis_pixels(y_mean, t, 200, 330)
    untiled = dict(analysis=(y_mean, y_scale), hyper=(z_mean, z_scale), y_prior=(py_mean, py_scale))

    def tiled(halo: int):
        _halves(monkeypatch, THRESHOLD_PIXELS=0, TILE_LATENTS=3, PRIOR_TILE=1, **{halo_name: halo})
        if halo_name == "PRIOR_HALO":
            return dict(hyper=tr.hyper(y_mean, t), y_prior=tr.y_prior(z, t)), None
        return dict(analysis=tr.analysis_pixels(pixels, t)), tr.synthesis_pixels(y_mean, t, 200, 330)

    good, good_px = tiled(2)
    for part, arrays in good.items():
        for got, want in zip(arrays, untiled[part]):
            assert got.shape == want.shape and _max_rel_diff(got, want) < 1e-4, part
    bad, bad_px = tiled(1)
    for part, arrays in bad.items():
        assert _max_rel_diff(arrays[0], untiled[part][0]) > 1e-3, part
    if good_px is not None:
        assert np.abs(good_px.astype(int) - x_hat).max() <= 1 and psnr(good_px, x_hat) > 60
        assert psnr(bad_px, x_hat) < psnr(good_px, x_hat)


def test_every_call_sees_at_most_a_tile_and_its_halo(ort, small_tiles):
    """Large images never reach a transform whole, priors included: no call's input is larger
    than one tile plus halo, so no stage's activations grow with the image."""
    rec = Recording(ort)
    tr = transforms.Transforms(rec)
    image = smooth_image(np.random.default_rng(3), 256, 320)
    y_mean, _ = tr.analysis_pixels(image, 0.5)
    z_mean, _ = tr.hyper(y_mean, 0.5)
    tr.y_prior(z_mean, 0.5)
    tr.synthesis_pixels(y_mean, 0.5, 256, 320)
    limit = {"analysis": (tiling.TILE_LATENTS + 2 * tiling.HALO_LATENTS) * tiling.LATENT_STRIDE,
             "synthesis": tiling.TILE_LATENTS + 2 * tiling.HALO_LATENTS,
             "hyper": (tiling.PRIOR_TILE + 2 * tiling.PRIOR_HALO) * tiling.Z_STRIDE,
             "y_prior": tiling.PRIOR_TILE + 2 * tiling.PRIOR_HALO}
    for part, most in limit.items():
        sizes = [s for p, s in rec.calls if p == part]
        assert len(sizes) > 1 and max(max(s) for s in sizes) <= most, (part, sizes)


def test_threshold():
    assert tiling.should_tile(8192, 8192) and tiling.should_tile(2049, 2048)
    assert not tiling.should_tile(2048, 2048) and not tiling.should_tile(1, 1)


def test_codec_on_onnx_runtime_tiled_equals_untiled(ort, monkeypatch):
    """The whole pipeline of the shipped model on ONNX Runtime: forced small tiles give the same
    bytes and the same image up to rounding (the no-seam check, on the light install's path)."""
    image = smooth_image(np.random.default_rng(7), 150, 230)  # odd sizes: replicate padding at the edges
    untiled = codec.encode(image, 60)
    plain = np.asarray(codec.decode(untiled))
    _halves(monkeypatch, THRESHOLD_PIXELS=0, TILE_LATENTS=4, PRIOR_TILE=2)
    tiled = codec.encode(image, 60)
    out = np.asarray(codec.decode(tiled))
    assert bbi.read_info(tiled).header == bbi.read_info(untiled).header
    assert abs(len(tiled) - len(untiled)) <= 8
    assert psnr(out, plain) > 50, psnr(out, plain)
    assert abs(psnr(out, image) - psnr(plain, image)) < 0.05
    assert psnr(np.asarray(codec.decode(untiled)), plain) > 50


def test_codec_on_torch_tiled_equals_untiled(tiny_model, monkeypatch):
    """The same with a torch-only model (the tiny test model has no ONNX export): one tiling
    implementation serves both back ends."""
    image = smooth_image(np.random.default_rng(7), 300, 230)
    untiled = codec.encode(image, 60, model=tiny_model)
    plain = np.asarray(codec.decode(untiled))
    calls = []
    real = transforms.TorchBackend.synthesis
    monkeypatch.setattr(transforms.TorchBackend, "synthesis", lambda self, y, t, *rest: calls.append(y.shape) or real(self, y, t, *rest))
    _halves(monkeypatch, THRESHOLD_PIXELS=0, TILE_LATENTS=4, PRIOR_TILE=2)
    tiled = codec.encode(image, 60, model=tiny_model)
    out = np.asarray(codec.decode(tiled))
    assert len(calls) > 1
    assert bbi.read_info(tiled).header == bbi.read_info(untiled).header
    assert psnr(out, plain) > 50, psnr(out, plain)
    assert abs(psnr(out, image) - psnr(plain, image)) < 0.05


def test_kl_in_chunks_is_identical():
    rng = np.random.default_rng(0)
    a = [rng.normal(size=1000).astype(np.float32) for _ in range(2)]
    s = [rng.uniform(0.1, 2, size=1000).astype(np.float32) for _ in range(2)]
    from bbimg import rec
    assert np.array_equal(tiling.kl_bits(a[0], s[0], a[1], s[1], chunk=77), rec.kl_bits(a[0], s[0], a[1], s[1]))


# -- the light install -------------------------------------------------------------------------------
_NO_TORCH = """
import sys
sys.modules["torch"] = None          # as in an install without the torch extra: import torch fails
"""


def _run_without_torch(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BBIMG_MODEL_PATH", "BBIMG_BACKEND")}
    return subprocess.run([sys.executable, "-c", _NO_TORCH + textwrap.dedent(script)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_encode_and_decode_need_no_torch_tiled_included(ort, tmp_path):
    """Without torch, the CLI encodes and decodes with the shipped model, tiled path included."""
    src = tmp_path / "in.png"
    Image.fromarray(smooth_image(np.random.default_rng(4), 130, 200)).save(src)
    out = _run_without_torch(f"""
        from bbimg import tiling
        from bbimg.cli.main import main
        tiling.THRESHOLD_PIXELS, tiling.TILE_LATENTS, tiling.PRIOR_TILE = 0, 4, 2
        for args in (["encode", "-q", "40", r"{src}", r"{tmp_path / 'a.bbi'}"],
                     ["decode", r"{tmp_path / 'a.bbi'}", r"{tmp_path / 'out.png'}"]):
            try:
                main(args)
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        import bbimg, bbimg.codec
        bbimg.info(open(r"{tmp_path / 'a.bbi'}", "rb").read())
        print("ok")
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert Image.open(tmp_path / "out.png").size == (200, 130)


def test_a_job_that_needs_torch_names_the_extra(tmp_path):
    """A model without an ONNX export, or a CUDA device, without torch: MissingExtraError (an
    ImportError) with one line naming the extra."""
    (tmp_path / "no-export.pt").write_bytes(b"weights without an ONNX export")
    out = _run_without_torch(f"""
        import os
        os.environ["BBIMG_MODEL_PATH"] = r"{tmp_path}"
        from bbimg import transforms
        for name, device in (("no-export", "cpu"), ("{DEFAULT_MODEL}", "cuda")):
            try:
                transforms.load_transforms(name, device)
            except transforms.MissingExtraError as exc:
                assert isinstance(exc, ImportError)
                print(exc)
        try:
            transforms.load_transforms("not-installed", "cpu")
        except ValueError as exc:
            print("ValueError")
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and lines[2] == "ValueError", lines
    for line, what in zip(lines, ("no-export", "cuda")):
        assert what in line and "pip install 'bbimg[torch]'" in line, line


def test_torch_extra_is_optional_in_the_package_metadata():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "torch" not in names and {"numpy", "pillow", "onnxruntime"} <= set(names)
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["torch"])


# -- memory bounds in the fuzz harness ---------------------------------------------------------------
def _harness():
    sys.path.insert(0, str(ROOT))
    from fuzz import harness
    return harness


def test_fuzz_resize_makes_valid_files_claiming_large_sizes(tiny_model):
    import random

    harness = _harness()
    seed = codec.encode(smooth_image(np.random.default_rng(1), 40, 56), 50, model=tiny_model)
    rng = random.Random(0)
    sizes = []
    for _ in range(40):
        out = harness.resize(seed, rng)
        if out is not None:
            h = bbi.read(out).header
            sizes.append(h.width * h.height)
            assert h.width <= 65535 and h.height <= 65535 and h.width * h.height <= bbi.MAX_PIXELS
    assert len(sizes) >= 30 and max(sizes) > 2**25 and min(sizes) < 2**20


def _bomb(model: str, z_channels: int, y_channels: int, width: int, height: int) -> bytes:
    """A valid minimal file: empty block plans, no index bits (decodes to prior samples)."""
    from bbimg.model_files import find_weights, weights_sha256
    from bbimg.rec.channel_plan import encode_channel_plan

    plan = {n: encode_channel_plan(np.zeros(n, np.int32), np.zeros(n, np.int32), 16) for n in (z_channels, y_channels)}
    header = bbi.Header(width=width, height=height, model_name=model, weights_hash=weights_sha256(find_weights(model)),
                        quality_t=0.5, quality_q=50, seed=0, kappa=16, temperature=1.0)
    return bbi.write(bbi.Container(header, (bbi.Section("ZPLN", plan[z_channels]), bbi.Section("ZIDX", b""),
                                            bbi.Section("YPLN", plan[y_channels]), bbi.Section("YIDX", b""))))


def test_fuzz_decodes_a_large_claim_under_the_memory_bound(ort):
    """A small file claiming more than the in-process cap is decoded in a subprocess capped at
    the documented memory bound (the shipped model, ONNX Runtime): it fits."""
    harness = _harness()
    data = _bomb(DEFAULT_MODEL, *codec._latent_channels(DEFAULT_MODEL)[:2], 700, 400)
    assert harness.check_decoder_any_size(data) == "ok-large"


def test_fuzz_refuses_claims_above_the_pixel_limit_quickly(ort):
    harness = _harness()
    data = _bomb(DEFAULT_MODEL, *codec._latent_channels(DEFAULT_MODEL)[:2], 16384, 16384)
    assert harness.check_decoder_any_size(data) == "refused"


def test_fuzz_reports_a_decode_over_the_memory_bound(ort, monkeypatch):
    """The cap bites: with a bound far below what the decode needs, the harness reports a failure."""
    harness = _harness()
    data = _bomb(DEFAULT_MODEL, *codec._latent_channels(DEFAULT_MODEL)[:2], 1024, 1024)
    monkeypatch.setattr(harness, "decode_memory_bound", lambda pixels: 0)
    monkeypatch.setattr(harness, "ADDRESS_SPACE_SLACK_BYTES", 16 << 20)
    with pytest.raises(AssertionError, match="capped process failed"):
        harness.check_decoder_any_size(data)
