"""Export a shipped model's transforms to ONNX, so that encoding and decoding run without torch.

``import torch`` alone takes 3-4 s on the reference 2-core machine: more than the whole decode
budget of a command-line run. ONNX Runtime imports in ~0.6 s and runs these convolutions as fast.
The graphs take the quality ``t`` as an input (the FiLM network is inside them) and keep fp16
weights behind Cast nodes (folded to fp32 when a session loads), so the files are as small as
the .pt weights. Each file records the sha256 of the .pt it came from: a stale export is never
used (``bbimg.runtime``).

    python -m bbimg.models.onnx_export bbimg-hvae-v5      # writes bbimg/weights/<name>.<part>.onnx

Needs torch and the ``onnx`` package (developers only; users need ``onnxruntime``).
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..runtime import PARTS
from .registry import load_model
from .vae import HierarchicalVAE

__all__ = ["PARTS", "export"]


class _Part(nn.Module):
    """One transform as a graph: ``fn(model, films, *inputs)`` with the quality ``t`` as last input."""

    def __init__(self, m: HierarchicalVAE, fn):
        super().__init__()
        self.m, self.fn = m, fn

    def forward(self, *inputs):
        *args, t = inputs
        return self.fn(self.m, self.m.films(t), *args)


def _graphs(m: HierarchicalVAE):
    """(part, module, example inputs, input names, output names, dynamic axes), in PARTS order."""
    c, k = m.cfg.latent_channels, m.cfg.hyper_channels
    t = torch.tensor([0.5])
    hw = {2: "h", 3: "w"}
    gauss = ["mean", "log_scale"]
    spatial = {"mean": hw, "log_scale": hw}
    yield "analysis", _Part(m, lambda m, f, x: _pair(m.encode_y(x, f.analysis))), \
        (torch.rand(1, 3, 128, 192), t), ["x", "t"], gauss, {"x": hw, **spatial}
    yield "hyper", _Part(m, lambda m, f, y: _pair(m.encode_z(y, f.hyper_analysis))), \
        (torch.randn(1, c, 8, 12), t), ["y_mean", "t"], gauss, {"y_mean": hw, **spatial}
    yield "zprior", _Part(m, lambda m, f: _pair(m.prior_z(f.z_prior, (1, k, 1, 1)))), (t,), ["t"], gauss, {}
    yield "yprior", _Part(m, lambda m, f, z: _pair(m.prior_y(z, f.hyper_synthesis))), \
        (torch.randn(1, k, 2, 3), t), ["z", "t"], gauss, {"z": hw, **spatial}
    yield "synthesis", _Part(m, lambda m, f, y: m.decode(y, f.synthesis)), \
        (torch.randn(1, c, 8, 12), t), ["y", "t"], ["x_hat"], {"y": hw, "x_hat": hw}


def _pair(g):
    return g.mean, g.log_scale


def _fp16_weights(model) -> None:
    """Store float32 initializers as float16 behind a Cast (ONNX Runtime folds it at load)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32 or arr.size < 16:
            continue
        half_name = init.name + "__fp16"
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=1))  # 1 = FLOAT
    for node in reversed(casts):
        graph.node.insert(0, node)


def export(name: str, out_dir: Path | None = None) -> list[Path]:
    import onnx

    info, model = load_model(name)
    out_dir = Path(out_dir) if out_dir else info.path.parent
    written = []
    graphs = list(_graphs(model.float().eval()))
    assert tuple(g[0] for g in graphs) == PARTS, "the export must write every part bbimg.runtime loads"
    for part, module, args, inputs, outputs, axes in graphs:
        path = out_dir / f"{name}.{part}.onnx"
        tmp = path.with_suffix(".tmp")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        proto = onnx.load(str(tmp))
        _fp16_weights(proto)
        onnx.helper.set_model_props(proto, {"bbimg_model": name, "bbimg_weights_sha256": info.sha256.hex()})
        onnx.save(proto, str(tmp))
        tmp.replace(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--out-dir", type=Path)
    args = parser.parse_args()
    for path in export(args.name, args.out_dir):
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
