"""The fast synthesis: a lighter g_s of the same model decodes the same files (bbimg decode --fast)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from bbimg import codec, runtime  # noqa: E402
from bbimg.cli.main import main as cli  # noqa: E402
from bbimg.training.fast_synthesis import light_from  # noqa: E402
from conftest import TINY, install_onnx_tiny, smooth_image  # noqa: E402

NAME = "tiny-fast"


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A tiny model with its ONNX export alone on $BBIMG_MODEL_PATH: (folder, the torch model)."""
    monkeypatch.setenv("BBIMG_MODEL_PATH", str(tmp_path))
    model = install_onnx_tiny(tmp_path, NAME)
    runtime._cache.clear()
    yield tmp_path, model
    runtime._cache.clear()


def _light(model, widths=(4, 4, 8)):
    light = light_from(model, widths)
    with torch.no_grad():   # no longer the pruned teacher: a decoder of its own
        for p in light.g_s.parameters():
            p.mul_(1.1)
    return light.eval()


@pytest.fixture
def coded(model_dir):
    image = smooth_image(np.random.default_rng(4), 72, 100)
    return codec.encode(image, 60, model=NAME), image


def test_light_from_the_same_widths_is_the_model_itself(model_dir):
    _, model = model_dir
    same = light_from(model, TINY["widths"])
    y = torch.randn(1, TINY["latent_channels"], 3, 4) * 8
    for t in (0.0, 0.4, 1.0):
        tt = torch.tensor([t])
        with torch.no_grad():
            assert torch.equal(model.decode(y, model.films(tt).synthesis), same.decode(y, same.films(tt).synthesis))


def test_light_from_keeps_the_strongest_channels(model_dir):
    _, model = model_dir
    light = light_from(model, (4, 4, 8))
    assert [layer.out_channels for layer in light.g_s] == [8, 4, 4, 3]
    strongest = torch.topk(model.g_s[2].weight.pow(2).sum((1, 2, 3)), 4).indices.sort().values
    assert torch.equal(light.g_s[1].weight, model.g_s[1].weight[:, strongest])
    assert torch.equal(light.g_s_act[1].gamma, model.g_s_act[1].gamma[strongest][:, strongest])


def test_fast_decode_runs_the_light_synthesis_on_the_same_file(model_dir, coded):
    from bbimg.models.onnx_export import export_fast_synthesis

    folder, model = model_dir
    data, image = coded
    assert not runtime.load(NAME).has_fast_synthesis
    with pytest.raises(ValueError, match="no fast synthesis"):
        codec.decode(data, fast=True)
    light = _light(model)
    path = export_fast_synthesis(NAME, light, {"step": 3})
    assert path == folder / f"{NAME}.synthesis-fast.onnx"
    runtime._cache.clear()
    tr = runtime.load(NAME)
    assert tr.has_fast_synthesis
    # The exported part computes the light g_s (with its fp16 weights) at any quality.
    half = light_from(model, (4, 4, 8))
    half.load_state_dict({k: v.half().float() for k, v in light.state_dict().items()})
    y = np.random.default_rng(2).standard_normal((1, TINY["latent_channels"], 5, 6)).astype(np.float32) * 8
    for t in (0.1, 0.9):
        with torch.no_grad():
            want = half.decode(torch.from_numpy(y), half.films(torch.tensor([t])).synthesis).numpy()
        assert np.abs(tr.synthesis(y, t, fast=True) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    full = np.asarray(codec.decode(data))
    fast = np.asarray(codec.decode(data, fast=True))
    assert fast.shape == full.shape == image.shape and not np.array_equal(fast, full)
    assert np.array_equal(np.asarray(codec.decode(data)), full)   # the plain decode is unchanged


def test_a_fast_synthesis_of_other_weights_is_refused(model_dir, coded, tmp_path_factory):
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.models.onnx_export import export_fast_synthesis
    from bbimg.training.trainer import export_weights

    folder, model = model_dir
    data, _ = coded
    other = tmp_path_factory.mktemp("other")
    torch.manual_seed(9)   # the same name, other weights: its part records their hash
    export_weights({"config": dataclasses.asdict(model.cfg), "model": HierarchicalVAE(VAEConfig(**TINY)).state_dict(),
                    "step": 0}, other / f"{NAME}.pt")
    from bbimg.models.registry import load_model
    other_model = load_model(NAME, path=other / f"{NAME}.pt")[1].float()
    import os
    os.environ["BBIMG_MODEL_PATH"] = str(other)
    try:
        made = export_fast_synthesis(NAME, _light(other_model))
    finally:
        os.environ["BBIMG_MODEL_PATH"] = str(folder)
    made.replace(folder / made.name)
    runtime._cache.clear()
    with pytest.raises(ValueError, match="other weights"):
        codec.decode(data, fast=True)


def test_cli_fast_decode_and_its_error(model_dir, coded, tmp_path):
    from bbimg.models.onnx_export import export_fast_synthesis

    _, model = model_dir
    data, _ = coded
    src = tmp_path / "in.bbi"
    src.write_bytes(data)
    out = tmp_path / "out.png"
    res = CliRunner().invoke(cli, ["decode", str(src), str(out), "--fast"])
    assert res.exit_code == 1 and not out.exists()
    assert "no fast synthesis" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    import json

    def listed() -> bool:
        res = CliRunner().invoke(cli, ["models", "--json"])
        return next(r for r in json.loads(res.output) if r["name"] == NAME)["fast_synthesis"]

    assert not listed()
    export_fast_synthesis(NAME, _light(model))
    runtime._cache.clear()
    assert listed()
    res = CliRunner().invoke(cli, ["decode", str(src), str(out), "--fast"])
    assert res.exit_code == 0, res.output
    from PIL import Image
    decoded = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(decoded, np.asarray(codec.decode(data, fast=True)))
