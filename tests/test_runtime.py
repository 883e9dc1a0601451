"""The ONNX Runtime path: same files as torch, cross-decodable, and a command line free of torch."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from bbimg import codec, runtime
from bbimg.evaluate import psnr
from conftest import TINY, smooth_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

NAME = "tiny-onnx"


@pytest.fixture
def onnx_model(tmp_path, monkeypatch):
    """A tiny model with its ONNX export, alone on $BBIMG_MODEL_PATH."""
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.models.onnx_export import export
    from bbimg.training.trainer import export_weights

    torch.manual_seed(1)
    model = HierarchicalVAE(VAEConfig(**TINY))
    export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 0},
                   tmp_path / f"{NAME}.pt")
    monkeypatch.setenv("BBIMG_MODEL_PATH", str(tmp_path))
    export(NAME, tmp_path)
    return tmp_path


def test_export_is_found_and_matches_torch(onnx_model, monkeypatch):
    assert runtime.load(NAME) is not None
    image = Image.fromarray(smooth_image(np.random.default_rng(5), 80, 112))
    data_ort = codec.encode(image, 60, model=NAME)
    monkeypatch.setenv("BBIMG_BACKEND", "torch")
    assert runtime.load(NAME) is None
    data_torch = codec.encode(image, 60, model=NAME)
    torch_of_ort = np.asarray(codec.decode(data_ort))
    torch_of_torch = np.asarray(codec.decode(data_torch))
    monkeypatch.setenv("BBIMG_BACKEND", "auto")
    ort_of_ort = np.asarray(codec.decode(data_ort))
    ort_of_torch = np.asarray(codec.decode(data_torch))
    # Either engine decodes either file, to within rounding of a few values.
    assert psnr(torch_of_ort, ort_of_ort) > 60
    assert psnr(torch_of_torch, ort_of_torch) > 60
    # The files are the same size (the plan comes from the same KL) and code the same image.
    assert abs(len(data_ort) - len(data_torch)) <= 8
    assert abs(psnr(np.asarray(image), ort_of_ort) - psnr(np.asarray(image), torch_of_torch)) < 0.1


def test_stale_export_is_not_used(onnx_model):
    from bbimg.models import HierarchicalVAE, VAEConfig
    from bbimg.training.trainer import export_weights

    assert runtime.load(NAME) is not None
    torch.manual_seed(2)  # other weights under the same name: the export no longer matches
    model = HierarchicalVAE(VAEConfig(**TINY))
    export_weights({"config": dataclasses.asdict(model.cfg), "model": model.state_dict(), "step": 1},
                   onnx_model / f"{NAME}.pt")
    assert runtime.load(NAME) is None
    image = Image.fromarray(smooth_image(np.random.default_rng(6), 64, 64))
    assert codec.decode(codec.encode(image, 50, model=NAME)).size == (64, 64)  # torch takes over


def test_missing_part_falls_back_to_torch(onnx_model):
    (onnx_model / f"{NAME}.synthesis.onnx").unlink()
    assert runtime.load(NAME) is None


@pytest.mark.slow
def test_command_line_never_imports_torch(tmp_path):
    """The shipped model has its export: encode and decode on the CPU run without torch."""
    src = tmp_path / "in.png"
    Image.fromarray(smooth_image(np.random.default_rng(7), 96, 128)).save(src)
    script = textwrap.dedent(f"""
        import sys
        from bbimg.cli.main import main
        for args in (["encode", "-q", "40", r"{src}", r"{tmp_path / 'a.bbi'}"],
                     ["decode", r"{tmp_path / 'a.bbi'}", r"{tmp_path / 'out.png'}"]):
            try:
                main(args)
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("BBIMG_MODEL_PATH", "BBIMG_BACKEND")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**env, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert Image.open(tmp_path / "out.png").size == (128, 96)
