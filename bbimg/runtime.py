"""The model's transforms on ONNX Runtime: numpy in, numpy out, no torch.

A command-line run that imports torch spends 3-4 s on the import alone (2-core reference
machine), more than a whole decode should take; ONNX Runtime imports in ~0.6 s. The graphs come
from ``python -m bbimg.models.onnx_export NAME`` and sit beside ``NAME.pt``; each records the
sha256 of the weights it was exported from, and a missing, stale or unreadable export means the
codec needs torch (``bbimg[torch]``; ``bbimg.transforms``). The graphs take any spatial size, so
``bbimg.transforms`` runs them tile by tile on large images. Decoding does not depend on which engine computed the priors
(bbimg.codec: no table is derived from floating-point outputs), so files move freely between
the two.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .geometry import MODEL_STRIDE

from .model_files import find_weights, weights_sha256

__all__ = ["OrtTransforms", "load", "PARTS"]

PARTS = ("analysis", "hyper", "zprior", "yprior", "synthesis")
_cache: dict[tuple, "OrtTransforms | None"] = {}
_lock = threading.Lock()


class OrtTransforms:
    """The five transforms of a shipped model as lazily created ONNX Runtime sessions."""

    stride = MODEL_STRIDE

    def __init__(self, name: str, weights: Path, sha256: bytes, files: dict[str, Path]):
        self.name, self.weights, self.sha256, self._files = name, weights, sha256, files
        self._sessions: dict = {}
        self._session_lock = threading.Lock()

    def _run(self, part: str, feeds: dict) -> list[np.ndarray]:
        with self._session_lock:
            sess = self._sessions.get(part)
            if sess is None:
                sess = self._sessions[part] = _session(self._files[part])
        return sess.run(None, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})

    @staticmethod
    def _t(t: float) -> np.ndarray:
        return np.array([t], np.float32)

    def analysis(self, x: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, H, W) in [0, 1], H and W multiples of 64 -> y posterior (mean, scale)."""
        mean, log_scale = self._run("analysis", {"x": x, "t": self._t(t)})
        return mean, np.exp(log_scale)

    def hyper(self, y_mean: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = self._run("hyper", {"y_mean": y_mean, "t": self._t(t)})
        return mean, np.exp(log_scale)

    def z_prior(self, t: float, lh: int, lw: int) -> tuple[np.ndarray, np.ndarray]:
        """The factorised z prior, broadcast (read-only) to (1, K, lh, lw)."""
        mean, log_scale = self._run("zprior", {"t": self._t(t)})
        shape = (1, mean.shape[1], lh, lw)
        return np.broadcast_to(mean, shape), np.broadcast_to(np.exp(log_scale), shape)

    def y_prior(self, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = self._run("yprior", {"z": z, "t": self._t(t)})
        return mean, np.exp(log_scale)

    def synthesis(self, y: np.ndarray, t: float) -> np.ndarray:
        return self._run("synthesis", {"y": y, "t": self._t(t)})[0]


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = int(os.environ.get("BBIMG_THREADS", "0") or 0)
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # No memory arena: ORT's arena grows by powers of two and keeps its peak for the session's
    # life (a 2560x2560 tiled synthesis peaked at 1.49 GB with it, 0.82 GB without, same speed).
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _matching_session(path: Path, sha_hex: str):
    """A session on ``path`` when its metadata names these weights, else None."""
    try:
        sess = _session(path)
    except Exception:
        return None
    return sess if sess.get_modelmeta().custom_metadata_map.get("bbimg_weights_sha256") == sha_hex else None


def load(name: str) -> OrtTransforms | None:
    """The ONNX Runtime transforms of model ``name``, or None where onnxruntime is missing, the
    export is missing or was made from other weights, or BBIMG_BACKEND=torch."""
    if os.environ.get("BBIMG_BACKEND", "auto") == "torch":
        return None
    weights = find_weights(name)
    if weights is None:
        return None
    key = (name, str(weights), weights.stat().st_mtime_ns)
    with _lock:
        if key in _cache:
            return _cache[key]
        result = None
        files = {part: weights.with_name(f"{name}.{part}.onnx") for part in PARTS}
        if all(f.is_file() for f in files.values()):
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                files = {}
            sha = weights_sha256(weights)
            # The small z-prior graph is opened to read the recorded hash, and kept for decoding.
            zprior = _matching_session(files["zprior"], sha.hex()) if files else None
            if zprior is not None:
                result = OrtTransforms(name, weights, sha, files)
                result._sessions["zprior"] = zprior
        _cache[key] = result
        return result
