"""The model's transforms on ONNX Runtime: numpy in, numpy out, no torch.

A command-line run that imports torch spends 3-4 s on the import alone (2-core reference
machine), more than a whole decode should take; ONNX Runtime imports in ~0.6 s. The graphs come
from ``python -m bbimg.models.onnx_export NAME`` and sit beside ``NAME.pt``; each records the
sha256 of the weights it was exported from, and a missing, stale or unreadable export means the
codec needs torch (``bbimg[torch]``; ``bbimg.transforms``). The graphs take any spatial size, so
``bbimg.transforms`` runs them tile by tile on large images. Decoding does not depend on which engine computed the priors
(bbimg.codec: no table is derived from floating-point outputs), so files move freely between
the two.

Sessions: ``intra_op_num_threads`` is ONNX Runtime's default (one thread per physical core) unless
``BBIMG_THREADS`` says otherwise, and its worker threads sleep instead of spinning between operators
(``allow_spinning`` 0: on a 2-core machine shared with other work a spinning thread takes a core
from the thread doing the work, 10-20% of a Kodak synthesis; the graphs run a few dozen operators
of milliseconds each, so spinning could win back microseconds per operator). The graph optimisation
level is ONNX Runtime's default, ORT_ENABLE_ALL (constant folding, the NCHWc layout). Parts named in
:data:`QUALITY_AT_LOAD` (the synthesis) take the quality as a load-time constant: their sessions are
made per quality and kept for the last :data:`SESSIONS_PER_PART` qualities.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .geometry import MODEL_STRIDE

from .model_files import find_weights, weights_sha256
from .threads import requested as requested_threads

__all__ = ["OrtTransforms", "load", "fast_synthesis_path", "PARTS", "FAST_SYNTHESIS", "QUALITY_AT_LOAD", "QUALITY_NAME", "SESSIONS_PER_PART"]

PARTS = ("analysis", "hyper", "zprior", "yprior", "synthesis")
#: An optional sixth part: a lighter synthesis of the same model (``tools/train_fast_synthesis.py``),
#: a faster decoder of the same files at a stated loss of quality. Its quality is given at load.
FAST_SYNTHESIS = "synthesis-fast"
#: Parts whose quality ``t`` is an initializer supplied when the session loads rather than an
#: input (``bbimg.models.onnx_export``: the FiLM gains are then folded into the weights).
QUALITY_AT_LOAD = ("synthesis",)
QUALITY_NAME = "t"
#: Sessions kept per load-time-quality part (a session per quality: a long-running process that
#: decodes files of many qualities keeps the most recent ones).
SESSIONS_PER_PART = 4
#: The analysis runs blocked (``bbimg.ort_blocked``) from inputs of this many pixels on: making it
#: takes ~0.1 s, which a 1 MP tile's ~0.05 s saving repays over a few tiles.
BLOCKED_MIN_PIXELS = 1 << 20
BLOCKED = "analysis-blocked"
_cache: dict[tuple, "OrtTransforms | None"] = {}
_lock = threading.Lock()


class OrtTransforms:
    """The five transforms of a shipped model as lazily created ONNX Runtime sessions."""

    stride = MODEL_STRIDE

    def __init__(self, name: str, weights: Path, sha256: bytes, files: dict[str, Path],
                 quality_at_load: tuple[str, ...] = ()):
        self.name, self.weights, self.sha256, self._files = name, weights, sha256, files
        self.quality_at_load = quality_at_load
        self.has_fast_synthesis = FAST_SYNTHESIS in files
        self._sessions: dict = {}
        self._pending: dict = {}
        self._session_lock = threading.Lock()

    def _key(self, part: str, t: float):
        return (part, float(np.float32(t))) if part in self.quality_at_load else part

    def _new_session(self, part: str, t: float):
        if part == BLOCKED:  # the analysis graph cut for the blocked layout, or None (ort_blocked.build)
            from . import ort_blocked

            return ort_blocked.build(self._files["analysis"], _options)
        sess = _session(self._files[part], self._t(t) if part in self.quality_at_load else None)
        if part == FAST_SYNTHESIS and \
                sess.get_modelmeta().custom_metadata_map.get("bbimg_weights_sha256") != self.sha256.hex():
            raise ValueError(f"the fast synthesis of model {self.name!r} was made for other weights")
        return sess

    def prepare(self, parts: tuple[str, ...], t: float) -> None:
        """Start making the sessions of ``parts`` for quality ``t`` on a background thread, so that
        their graph loading (which releases the GIL) overlaps the caller's REC work; :meth:`session`
        waits for them. A part that fails to load is left to :meth:`session`, which raises."""
        with self._session_lock:
            todo = [(part, self._key(part, t)) for part in parts if part in self._files or part == BLOCKED]
            todo = [(part, key) for part, key in todo if key not in self._sessions and key not in self._pending]
            todo = [(part, self._pending.setdefault(key, _Pending())) for part, key in todo]
        if todo:
            # Not a daemon: the interpreter waits for it at exit instead of tearing ONNX Runtime
            # down under a thread that is still inside it.
            threading.Thread(target=self._make_pending, args=(todo, t), name="bbimg-sessions").start()

    def _make_pending(self, todo: list, t: float) -> None:
        for part, pending in todo:
            try:
                pending.session, pending.made = self._new_session(part, t), True
            except BaseException:  # noqa: BLE001  (session() makes it again and raises in its caller)
                pending.session = None
            pending.done.set()

    def session(self, part: str, t: float):
        """The ONNX Runtime session of ``part`` (for quality ``t`` where the part takes it at load)."""
        key = self._key(part, t)
        with self._session_lock:
            pending = self._pending.pop(key, None)
        if pending is not None:
            pending.done.wait()
        with self._session_lock:
            if key in self._sessions:
                sess = self._sessions.pop(key)
            elif pending is not None and pending.made:
                sess = pending.session
            else:  # not prepared, or it failed there: made here, where its errors raise
                sess = self._new_session(part, t)
            stale = [k for k in self._sessions if isinstance(k, tuple) and k[0] == part]
            for k in stale[:max(len(stale) - SESSIONS_PER_PART + 1, 0)]:
                del self._sessions[k]
            self._sessions[key] = sess  # (re)inserted last: the dict's order is the recency order
        return sess

    def _run(self, part: str, feeds: dict, t: float) -> list[np.ndarray]:
        sess = self.session(part, t)
        if part not in self.quality_at_load:
            feeds = {**feeds, QUALITY_NAME: self._t(t)}
        return sess.run(None, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})

    @staticmethod
    def _t(t: float) -> np.ndarray:
        return np.array([t], np.float32)

    def analysis(self, x: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, H, W) in [0, 1], H and W multiples of 64 -> y posterior (mean, scale)."""
        blocked = self._blocked_analysis(x.shape[2] * x.shape[3])
        if blocked is not None:
            mean, log_scale = blocked.run({"x": x, QUALITY_NAME: self._t(t)})
        else:
            mean, log_scale = self._run("analysis", {"x": x}, t)
        return mean, np.exp(log_scale)

    @staticmethod
    def _blocked_wanted(pixels: int) -> bool:
        return pixels >= BLOCKED_MIN_PIXELS and os.environ.get("BBIMG_ORT_BLOCKED", "1") != "0"

    def _blocked_analysis(self, pixels: int):
        """The analysis in ONNX Runtime's blocked layout (``bbimg.ort_blocked``: same bits, 5-15%
        less time in the transform) for inputs of :data:`BLOCKED_MIN_PIXELS` or more, once made;
        None otherwise, where it cannot be made, or with ``BBIMG_ORT_BLOCKED=0``."""
        with self._session_lock:
            if BLOCKED not in self._sessions and not self._blocked_wanted(pixels):
                return None
        return self.session(BLOCKED, 0.0)

    def prepare_analysis(self, pixels: int) -> None:
        """Start making the analysis transform's session for an image of ``pixels`` pixels on a
        background thread (the blocked graph, which takes ~0.15 s to cut and check, for large
        images), so that it overlaps decoding and preparing the image."""
        if self._blocked_wanted(pixels):
            self.prepare((BLOCKED,), 0.0)
        elif "analysis" not in self.quality_at_load:  # else its session waits for the quality
            self.prepare(("analysis",), 0.0)

    def hyper(self, y_mean: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = self._run("hyper", {"y_mean": y_mean}, t)
        return mean, np.exp(log_scale)

    def z_prior(self, t: float, lh: int, lw: int) -> tuple[np.ndarray, np.ndarray]:
        """The factorised z prior, broadcast (read-only) to (1, K, lh, lw)."""
        mean, log_scale = self._run("zprior", {}, t)
        shape = (1, mean.shape[1], lh, lw)
        return np.broadcast_to(mean, shape), np.broadcast_to(np.exp(log_scale), shape)

    def y_prior(self, z: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = self._run("yprior", {"z": z}, t)
        return mean, np.exp(log_scale)

    def synthesis(self, y: np.ndarray, t: float, fast: bool = False) -> np.ndarray:
        if fast and not self.has_fast_synthesis:
            raise ValueError(f"model {self.name!r} has no fast synthesis installed")
        return self._run(FAST_SYNTHESIS if fast else "synthesis", {"y": y}, t)[0]


class _Pending:
    """A session being made on the background thread of :meth:`OrtTransforms.prepare` (``made``:
    without an error; the blocked analysis may be None)."""

    def __init__(self):
        self.done, self.session, self.made = threading.Event(), None, False


def _options():
    """The SessionOptions of every bbimg session (threads, no spinning, errors only)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = requested_threads()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def _session(path: Path, quality: np.ndarray | None = None):
    """A CPU session on ``path``; ``quality``: the value of its load-time quality initializer."""
    import onnxruntime as ort

    opts = _options()
    # ONNX Runtime's memory arena (its default) stays on: without it every operator's output is a
    # fresh mmap whose pages the kernel faults in and zeroes, run after run. Kodak synthesis in a
    # fresh process: 0.096 s and 180 MB peak RSS with it, 0.135 s and 250 MB without; 12 MP photo
    # (64-latent tiles): 3.7 s / 0.93 GB with it, 5.0-6.1 s / 0.57 GB without. The arena keeps its
    # peak (one tile's activations, grown by powers of two) for the session's life.
    if quality is not None:
        # Constant for the session: folded with everything computed from it when the graph loads.
        opts.add_external_initializers([QUALITY_NAME], [ort.OrtValue.ortvalue_from_numpy(quality)])
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _matching_session(path: Path, sha_hex: str):
    """A session on ``path`` when its metadata names these weights, else None."""
    try:
        sess = _session(path)
    except Exception:
        return None
    return sess if sess.get_modelmeta().custom_metadata_map.get("bbimg_weights_sha256") == sha_hex else None


def fast_synthesis_path(name: str, weights: Path) -> Path:
    """Where model ``name``'s optional fast synthesis lies: beside its weights."""
    return weights.with_name(f"{name}.{FAST_SYNTHESIS}.onnx")


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
                # Exports that predate load-time qualities name none: every part takes t as an input.
                at_load = zprior.get_modelmeta().custom_metadata_map.get("bbimg_quality_at_load", "")
                at_load = tuple(p for p in at_load.split(",") if p)
                fast = fast_synthesis_path(name, weights)
                if fast.is_file():
                    files, at_load = {**files, FAST_SYNTHESIS: fast}, (*at_load, FAST_SYNTHESIS)
                result = OrtTransforms(name, weights, sha, files, at_load)
                result._sessions["zprior"] = zprior
        _cache[key] = result
        return result
