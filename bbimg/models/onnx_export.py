"""Export a shipped model's transforms to ONNX, so that encoding and decoding run without torch.

``import torch`` alone takes 3-4 s on the reference 2-core machine: more than the whole decode
budget of a command-line run. ONNX Runtime imports in ~0.6 s and runs these convolutions as fast.
The graphs take the quality ``t`` as an input (the FiLM network is inside them) and keep fp16
weights behind Cast nodes (folded to fp32 when a session loads), so the files are as small as
the .pt weights. Each file records the sha256 of the .pt it came from: a stale export is never
used (``bbimg.runtime``).

    python -m bbimg.models.onnx_export bbimg-hvae-v4      # writes bbimg/weights/<name>.<part>.onnx

Needs torch and the ``onnx`` package (developers only; users need ``onnxruntime``).
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .registry import load_model
from .vae import HierarchicalVAE

__all__ = ["PARTS", "export"]

PARTS = ("analysis", "hyper", "zprior", "yprior", "synthesis")


class _Analysis(nn.Module):
    def __init__(self, m: HierarchicalVAE):
        super().__init__()
        self.m = m

    def forward(self, x, t):
        q = self.m.encode_y(x, self.m._films(t)[0])
        return q.mean, q.log_scale


class _Hyper(nn.Module):
    def __init__(self, m: HierarchicalVAE):
        super().__init__()
        self.m = m

    def forward(self, y_mean, t):
        q = self.m.encode_z(y_mean, self.m._films(t)[2])
        return q.mean, q.log_scale


class _ZPrior(nn.Module):
    def __init__(self, m: HierarchicalVAE):
        super().__init__()
        self.m = m

    def forward(self, t):
        p = self.m.prior_z(self.m._films(t)[4], (1, self.m.cfg.hyper_channels, 1, 1))
        return p.mean, p.log_scale


class _YPrior(nn.Module):
    def __init__(self, m: HierarchicalVAE):
        super().__init__()
        self.m = m

    def forward(self, z, t):
        p = self.m.prior_y(z, self.m._films(t)[3])
        return p.mean, p.log_scale


class _Synthesis(nn.Module):
    def __init__(self, m: HierarchicalVAE):
        super().__init__()
        self.m = m

    def forward(self, y, t):
        return self.m.decode(y, self.m._films(t)[1])


def _graphs(m: HierarchicalVAE):
    c, k = m.cfg.latent_channels, m.cfg.hyper_channels
    t = torch.tensor([0.5])
    hw = {2: "h", 3: "w"}
    yield "analysis", _Analysis(m), (torch.rand(1, 3, 128, 192), t), ["x", "t"], ["mean", "log_scale"], \
        {"x": hw, "mean": hw, "log_scale": hw}
    yield "hyper", _Hyper(m), (torch.randn(1, c, 8, 12), t), ["y_mean", "t"], ["mean", "log_scale"], \
        {"y_mean": hw, "mean": hw, "log_scale": hw}
    yield "zprior", _ZPrior(m), (t,), ["t"], ["mean", "log_scale"], {}
    yield "yprior", _YPrior(m), (torch.randn(1, k, 2, 3), t), ["z", "t"], ["mean", "log_scale"], \
        {"z": hw, "mean": hw, "log_scale": hw}
    yield "synthesis", _Synthesis(m), (torch.randn(1, c, 8, 12), t), ["y", "t"], ["x_hat"], \
        {"y": hw, "x_hat": hw}


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
    for part, module, args, inputs, outputs, axes in _graphs(model.float().eval()):
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
