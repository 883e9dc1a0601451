"""The model's transforms behind one numpy interface, tiled for any image size.

Two back ends compute the transforms on numpy arrays: ONNX Runtime (the exported graphs, on the
CPU; no ``import torch``, which alone costs 3-4 s on the reference CPU, and the only one a light
install has) and torch (CUDA, models without an ONNX export, ``BBIMG_BACKEND=torch``; installed
with ``pip install 'bbimg[torch]'``). :class:`Transforms` gives the codec pipeline its pixel-level
interface on top of either and runs every transform tile by tile above a size threshold
(``bbimg.tiling``), so the pipeline never touches a tensor and no stage's activations grow past
a tile's.
"""
from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from . import runtime
from . import tiling
from .geometry import padded_size
from .model_files import find_weights, search_path

__all__ = ["MissingExtraError", "require_torch", "Backend", "TorchBackend", "Transforms", "load_transforms",
           "TORCH_EXTRA_HINT"]

TORCH_EXTRA_HINT = "pip install 'bbimg[torch]'"


class MissingExtraError(ImportError):
    """An optional dependency (the ``torch`` extra) is needed for this and is not installed; the
    message is one line naming the extra to install."""


def require_torch(purpose: str):
    """``import torch``, or :class:`MissingExtraError` saying that ``purpose`` needs the extra."""
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError(f"{purpose} needs PyTorch, which is not installed: {TORCH_EXTRA_HINT}") from exc
    return torch


class Backend(Protocol):
    """The five transforms of a model on whole numpy arrays (``bbimg.runtime.OrtTransforms`` or
    :class:`TorchBackend`)."""

    name: str
    sha256: bytes
    stride: int
    has_fast_synthesis: bool

    def analysis(self, x: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]: ...
    def hyper(self, y_mean: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]: ...
    def z_prior(self, t: float, lh: int, lw: int) -> tuple[np.ndarray, np.ndarray]: ...
    def y_prior(self, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]: ...
    def synthesis(self, y: np.ndarray, t: float, fast: bool = False) -> np.ndarray: ...
    def prepare(self, parts: tuple[str, ...], t: float) -> None: ...

    def prepare_analysis(self, pixels: int) -> None: ...


class TorchBackend:
    """The model's transforms on torch (any device), numpy in and out: the same calls as
    ``bbimg.runtime.OrtTransforms``."""

    def __init__(self, name: str, device: str):
        torch = require_torch(f"device {device!r}" if str(device) != "cpu" else f"model {name!r} on torch")
        from .models import load_model

        self._torch = torch
        self.info, self.net = load_model(name, device)
        self.name, self.sha256, self.stride = name, self.info.sha256, self.net.cfg.stride
        self.device = torch.device(device)

    def _films(self, t: float):
        return self.net.films(self._torch.tensor([t], device=self.device))

    def _np(self, a) -> np.ndarray:
        return a.detach().to("cpu", self._torch.float32).numpy()

    def _in(self, a: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

    def _gaussian(self, g) -> tuple[np.ndarray, np.ndarray]:
        return self._np(g.mean), self._np(g.log_scale.exp_())

    def analysis(self, x: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            return self._gaussian(self.net.encode_y(self._in(x), self._films(t).analysis))

    def hyper(self, y_mean: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            return self._gaussian(self.net.encode_z(self._in(y_mean), self._films(t).hyper_analysis))

    def z_prior(self, t: float, lh: int, lw: int) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            p = self.net.prior_z(self._films(t).z_prior, (1, self.net.cfg.hyper_channels, 1, 1))
            mean, scale = self._gaussian(p)
        shape = (1, mean.shape[1], lh, lw)
        return np.broadcast_to(mean, shape), np.broadcast_to(scale, shape)

    def y_prior(self, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            return self._gaussian(self.net.prior_y(self._in(z), self._films(t).hyper_synthesis))

    has_fast_synthesis = False  # the light synthesis ships as an ONNX graph only

    def prepare(self, parts: tuple[str, ...], t: float) -> None:
        """Nothing to load ahead: the torch model is whole in memory."""

    def prepare_analysis(self, pixels: int) -> None:
        """Nothing to load ahead either."""

    def synthesis(self, y: np.ndarray, t: float, fast: bool = False) -> np.ndarray:
        if fast:
            raise ValueError(f"the fast synthesis runs on ONNX Runtime only (model {self.name!r} runs on torch here)")
        with self._torch.no_grad():
            return self._np(self.net.decode(self._in(y), self._films(t).synthesis))


def _grid_reader(a: np.ndarray, step: int):
    """``read`` for :func:`bbimg.tiling.map_tiles` over a latent: grid cells of ``step`` positions."""
    return lambda r0, r1, c0, c1: a[:, :, r0 * step:r1 * step, c0 * step:c1 * step]


class Transforms:
    """The codec pipeline's interface to a model: pixels and latents as numpy arrays, every
    transform tiled when the image is large (``bbimg.tiling``), on any :class:`Backend`."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.name, self.sha256, self.stride = backend.name, backend.sha256, backend.stride
        self.has_fast_synthesis = backend.has_fast_synthesis

    def prepare_analysis(self, pixels: int) -> None:
        """Load the analysis transform for an image of ``pixels`` pixels in the background where the
        back end can (ONNX Runtime: while the image is decoded and prepared)."""
        self.backend.prepare_analysis(pixels)

    def prepare_encode(self, t: float) -> None:
        """Load the transforms an encode at quality ``t`` runs after the analysis, in the background
        where the back end can (ONNX Runtime: while the analysis runs)."""
        self.backend.prepare(("hyper", "yprior"), t)

    def prepare_decode(self, t: float, fast: bool = False) -> None:
        """Load the transforms a decode at quality ``t`` runs, in the background where the back end
        can (ONNX Runtime: while the REC decoder runs)."""
        self.backend.prepare(("yprior", runtime.FAST_SYNTHESIS if fast else "synthesis"), t)

    def _tile(self, latent_rows: int, latent_cols: int, tile: int) -> int | None:
        """Tile size for a y grid of this size (None: one call for the whole grid)."""
        s = tiling.LATENT_STRIDE
        return tile if tiling.should_tile(latent_rows * s, latent_cols * s, self.stride) else None

    def analysis_pixels(self, pixels: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> the y posterior (mean, scale), each (1, M, H'/16, W'/16) for the
        image padded to the model's stride by replicating its last row and column."""
        height, width = pixels.shape[:2]
        s, stride = tiling.LATENT_STRIDE, self.stride
        padded_height, padded_width = padded_size(height, width, stride)
        rows, cols = padded_height // s, padded_width // s

        def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            # The image rows and columns the tile holds (at least one: a tile wholly in the padding
            # repeats the last), the rest replicated from them as pad_to_multiple does.
            top, left = min(r0 * s, height - 1), min(c0 * s, width - 1)
            rows_in, cols_in = max(min(r1 * s, height) - top, 1), max(min(c1 * s, width) - left, 1)
            x = np.empty((1, 3, (r1 - r0) * s, (c1 - c0) * s), np.float32)
            # uint8 -> float32 is exact, then one float32 division: the bits of astype + /= 255.
            np.divide(pixels[top:top + rows_in, left:left + cols_in].transpose(2, 0, 1),
                      np.float32(255.0), out=x[0, :, :rows_in, :cols_in])
            x[0, :, :rows_in, cols_in:] = x[0, :, :rows_in, cols_in - 1:cols_in]
            x[0, :, rows_in:, :] = x[0, :, rows_in - 1:rows_in, :]
            return x

        return tuple(tiling.map_tiles(lambda x: self.backend.analysis(x, t), read, rows, cols, scale=1,
                                      tile=self._tile(rows, cols, tiling.TILE_LATENTS), halo=tiling.HALO_LATENTS))

    def hyper(self, y_mean: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """y posterior mean (1, M, h, w) -> the z posterior (mean, scale), (1, K, h/4, w/4)."""
        k = tiling.Z_STRIDE
        rows, cols = y_mean.shape[2] // k, y_mean.shape[3] // k
        return tuple(tiling.map_tiles(lambda y: self.backend.hyper(y, t), _grid_reader(y_mean, k), rows, cols,
                                      scale=1, tile=self._tile(rows * k, cols * k, tiling.PRIOR_TILE),
                                      halo=tiling.PRIOR_HALO))

    def z_prior(self, t: float, lh: int, lw: int) -> tuple[np.ndarray, np.ndarray]:
        """The factorised z prior, broadcast (read-only) to (1, K, lh, lw)."""
        return self.backend.z_prior(t, lh, lw)

    def y_prior(self, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """z (1, K, h, w) -> p(y | z) as (mean, scale), each (1, M, 4h, 4w)."""
        k = tiling.Z_STRIDE
        rows, cols = z.shape[2], z.shape[3]
        return tuple(tiling.map_tiles(lambda zt: self.backend.y_prior(zt, t), _grid_reader(z, 1), rows, cols,
                                      scale=k, tile=self._tile(rows * k, cols * k, tiling.PRIOR_TILE),
                                      halo=tiling.PRIOR_HALO))

    def synthesis_pixels(self, y: np.ndarray, t: float, height: int, width: int, fast: bool = False) -> np.ndarray:
        """The latent y (1, M, h, w) -> the decoded image cropped to (height, width, 3) uint8
        (values rounded half to even); ``fast``: with the model's light synthesis."""
        out = np.empty((height, width, 3), np.uint8)

        def sink(row: int, col: int, parts) -> None:
            x = parts[0][0, :, :max(height - row, 0), :max(width - col, 0)]
            np.clip(x, 0.0, 1.0, out=x)
            x *= np.float32(255.0)
            out[row:row + x.shape[1], col:col + x.shape[2]] = np.round(x).transpose(1, 2, 0)

        rows, cols = y.shape[2], y.shape[3]
        tiling.map_tiles(lambda yt: (self.backend.synthesis(yt, t, fast),), _grid_reader(y, 1), rows, cols,
                         scale=tiling.LATENT_STRIDE, tile=self._tile(rows, cols, tiling.TILE_LATENTS),
                         halo=tiling.HALO_LATENTS, sink=sink)
        return out


def load_transforms(name: str, device: str = "cpu", height: int = 0, width: int = 0) -> Transforms:
    """The transforms of model ``name``: ONNX Runtime on the CPU where the model's export is
    installed (any image size), torch otherwise.

    Raises ValueError for a model that is not installed and :class:`MissingExtraError` where the
    job needs torch (CUDA, a model without an ONNX export, ``BBIMG_BACKEND=torch``) and torch is
    not installed. ``height``/``width`` are accepted for callers that pass the image size."""
    if find_weights(name) is None:
        known = ", ".join(sorted({p.stem for folder in search_path() for p in folder.glob("*.pt")})) or "none"
        raise ValueError(f"unknown model {name!r} (available: {known})")
    if str(device) == "cpu":
        ort = runtime.load(name)
        if ort is not None:
            return Transforms(ort)
        if os.environ.get("BBIMG_BACKEND", "auto") == "torch":
            require_torch("BBIMG_BACKEND=torch")
        else:
            require_torch(f"model {name!r} (no ONNX export installed)")
    return Transforms(TorchBackend(name, device))
