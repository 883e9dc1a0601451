"""The model's transforms behind one numpy interface, for the codec pipeline.

Two back ends: ONNX Runtime (the exported graphs; no ``import torch``, which alone costs 3-4 s on
the reference CPU) where it can run the job, i.e. on the CPU at an untiled size with the export
installed; torch everywhere else (CUDA, tiled large images, models without an export). Both take
and return numpy arrays, so the pipeline never touches a tensor.
"""
from __future__ import annotations

import numpy as np

from . import runtime
from . import tiling

__all__ = ["TorchTransforms", "OrtPipeline", "load_transforms"]


class TorchTransforms:
    """The model's transforms on torch (any device; tiles for large images), numpy in and out."""

    def __init__(self, name: str, device: str):
        import torch

        from .models import load_model

        self._torch = torch
        self.info, self.net = load_model(name, device)
        self.name, self.sha256, self.stride = name, self.info.sha256, self.net.cfg.stride
        self.device = torch.device(device)

    def _films(self, t: float):
        return self.net._films(self._torch.tensor([t], device=self.device))

    def _np(self, a) -> np.ndarray:
        return a.detach().to("cpu", self._torch.float32).numpy()

    def _in(self, a: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def analysis_pixels(self, pixels: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        from .models import pad_to_multiple

        with self._torch.no_grad():
            fa = self._films(t)[0]
            if tiling.should_tile(*pixels.shape[:2], self.stride):  # tiling hook
                q = tiling.encode_y(self.net, pixels, fa, self.device)
            else:
                x = self._torch.from_numpy(np.array(pixels, dtype=np.uint8)).to(self.device)
                x = pad_to_multiple(x.permute(2, 0, 1)[None].float().div_(255.0), self.stride)
                q = self.net.encode_y(x, fa)
                del x
            mean, log_scale = q.mean, q.log_scale
            del q
            return self._np(mean), self._np(log_scale.exp_())

    def hyper(self, y_mean: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            q = self.net.encode_z(self._in(y_mean), self._films(t)[2])
            return self._np(q.mean), self._np(q.scale)

    def z_prior(self, t: float, lh: int, lw: int) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            p = self.net.prior_z(self._films(t)[4], (1, self.net.cfg.hyper_channels, lh, lw))
            return self._np(p.mean), self._np(p.scale)

    def y_prior(self, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            p = self.net.prior_y(self._in(z), self._films(t)[3])
            return self._np(p.mean), self._np(p.scale)

    def synthesis_pixels(self, y: np.ndarray, t: float, height: int, width: int) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            fs = self._films(t)[1]
            y_t = self._in(y)
            if tiling.should_tile(height, width, self.stride):  # tiling hook
                return tiling.decode_pixels(self.net, y_t, fs, height, width)
            x_hat = self.net.decode(y_t, fs)[0, :, :height, :width]
            return tiling.to_uint8_hwc(x_hat)


class OrtPipeline:
    """Adapter giving the ONNX Runtime transforms the pipeline's pixel-level interface."""

    def __init__(self, ort: runtime.OrtTransforms):
        self._ort = ort
        self.name, self.sha256, self.stride = ort.name, ort.sha256, ort.stride
        self.hyper, self.z_prior, self.y_prior = ort.hyper, ort.z_prior, ort.y_prior

    def analysis_pixels(self, pixels: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        h, w = pixels.shape[:2]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        x = np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="edge")  # = pad_to_multiple's replicate
        x = (x.transpose(2, 0, 1)[None].astype(np.float32)) / np.float32(255.0)
        return self._ort.analysis(x, t)

    def synthesis_pixels(self, y: np.ndarray, t: float, height: int, width: int) -> np.ndarray:
        x_hat = self._ort.synthesis(y, t)[0, :, :height, :width]
        return np.round(np.clip(x_hat, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8).transpose(1, 2, 0)


def load_transforms(name: str, device: str, height: int, width: int):
    """ONNX Runtime where it can run this job (CPU, untiled size, export present), else torch."""
    if str(device) == "cpu" and not tiling.should_tile(height, width, 64):
        ort = runtime.load(name)
        if ort is not None:
            return OrtPipeline(ort)
    return TorchTransforms(name, device)
