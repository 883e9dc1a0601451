"""Relative entropy coding (REC) of Gaussian latents: numpy in, numpy out (no torch).

The encoder knows, per latent dim, a posterior q = N(mu_q, sigma_q^2) and a prior
p = N(mu_p, sigma_p^2) that the decoder also knows. Dims are cut into contiguous blocks
(a :class:`BlockPlan`; the codec's plans come from :mod:`bbimg.rec.channel_plan`); for block b
encoder and decoder generate the same 2^k_b candidates from p with shared randomness (Philox,
keyed by ``seed``) and the encoder sends the index of the candidate it selects (exactly k_b
bits). See docs/rec.md for the algorithm and the bitstream.

Typical use (as bbimg.codec codes one latent level of C channels x P positions)::

    from bbimg.rec import channel_plan as cp
    order = cp.position_order(P, seed)                      # each latent array is (C, P)[:, order]
    kl = rec.kl_bits(mu_q, sigma_q, mu_p, sigma_p).reshape(C, P)
    symbols, exps = cp.channel_plan(kl, kappa, cp.DEFAULT_BLOCK_RATIO)
    plan = cp.plan_from_channels(symbols, exps, P, kappa)
    idx = rec.encode(mu_q, sigma_q, mu_p, sigma_p, plan, seed)
    side, payload = cp.encode_channel_plan(symbols, exps, kappa), rec.encode_indices(idx, plan)
    # decoder
    plan = cp.plan_from_channels(*cp.decode_channel_plan(side, C, kappa), P, kappa)
    z = rec.decode(mu_p, sigma_p, plan, seed, rec.decode_indices(payload, plan))
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._sources import source_hash

try:  # BbiError-compatible: corrupt REC data is also a bbimg.format.BbiError
    from bbimg.format import BbiError as _BbiBase
except Exception:  # pragma: no cover - format.py is stdlib-only and normally importable
    _BbiBase = Exception

__all__ = [
    "DEFAULT_KAPPA",
    "DEFAULT_TEMPERATURE",
    "REC_NEAREST_SHIFT",
    "KAPPA_MIN",
    "KAPPA_MAX",
    "MAX_BLOCK_LEN",
    "RecError",
    "CorruptDataError",
    "BlockPlan",
    "kl_bits",
    "encode",
    "decode",
    "encode_indices",
    "decode_indices",
    "cuda_available",
    "core_info",
]

#: Bumped together with CORE_API_VERSION in csrc/bindings.cpp.
_CORE_API_VERSION = 3

DEFAULT_KAPPA = 16
#: None: the "nearest" selection rule; a number tau >= 0: the tempered rule (see :func:`encode`).
DEFAULT_TEMPERATURE: float | None = None
KAPPA_MIN = 8
KAPPA_MAX = 24


class RecError(ValueError):
    """Invalid input to the REC engine (bad shapes, non-finite values, bad parameters)."""


class CorruptDataError(RecError, _BbiBase):
    """REC side information or index data is malformed (also a :class:`bbimg.format.BbiError`)."""


def _load_core():
    try:
        from bbimg import _core
    except ImportError as exc:  # pragma: no cover - depends on the build state
        raise ImportError(
            "bbimg._core (the native REC engine) is not built; run "
            "`python setup.py build_ext --inplace` or `pip install -e . --no-build-isolation`"
        ) from exc
    if getattr(_core, "api_version", None) != _CORE_API_VERSION:
        raise ImportError(
            f"bbimg._core has API version {getattr(_core, 'api_version', None)}, this bbimg.rec "
            f"expects {_CORE_API_VERSION}: the build is stale, rebuild the extension"
        )
    csrc = Path(__file__).resolve().parents[2] / "csrc"
    if csrc.is_dir() and not os.environ.get("BBIMG_SKIP_STALE_CHECK"):
        want = source_hash(csrc)
        if _core.source_hash and _core.source_hash != want:
            raise ImportError(
                f"bbimg._core was built from other sources (hash {_core.source_hash}, csrc/ is "
                f"{want}): the build is stale; rebuild with `python setup.py build_ext --inplace` "
                "(or set BBIMG_SKIP_STALE_CHECK=1)"
            )
    return _core


_core = _load_core()
#: The engine's cap on one block's length (dims); channel plans never cut longer blocks.
MAX_BLOCK_LEN: int = int(_core.MAX_BLOCK_LEN)
#: Target shift of the "nearest" rule (csrc/rec.h), measured on Kodak (docs/rec.md section 5).
REC_NEAREST_SHIFT: float = float(_core.NEAREST_SHIFT)
_CoreRecError = _core.RecError
_CoreCorrupt = _core.CorruptDataError


def _call(fn, *args, **kwargs):
    """Calls into _core, mapping its exceptions onto this module's classes."""
    try:
        return fn(*args, **kwargs)
    except _CoreCorrupt as exc:
        raise CorruptDataError(str(exc)) from None
    except _CoreRecError as exc:
        raise RecError(str(exc)) from None


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BlockPlan:
    """Contiguous blocks of dims: block b has ``lengths[b]`` dims and 2**exponents[b] candidates."""

    lengths: np.ndarray  # int32 [B]
    exponents: np.ndarray  # uint8 [B]
    kappa: int

    def __post_init__(self) -> None:
        lengths = np.ascontiguousarray(self.lengths, dtype=np.int32)
        exps = np.ascontiguousarray(self.exponents, dtype=np.uint8)
        if lengths.ndim != 1 or exps.shape != lengths.shape:
            raise RecError("BlockPlan lengths and exponents must be 1-D arrays of equal length")
        _check_kappa(self.kappa)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "exponents", exps)

    @property
    def n_blocks(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_dims(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    @property
    def index_bits(self) -> int:
        """Exact size of the index stream in bits (before byte padding)."""
        return int(self.exponents.sum(dtype=np.int64))

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)[:-1]]).astype(np.int64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockPlan):
            return NotImplemented
        return (
            self.kappa == other.kappa
            and np.array_equal(self.lengths, other.lengths)
            and np.array_equal(self.exponents, other.exponents)
        )

    def __repr__(self) -> str:
        return f"BlockPlan(n_blocks={self.n_blocks}, n_dims={self.n_dims}, kappa={self.kappa}, index_bits={self.index_bits})"


def _check_kappa(kappa: object) -> int:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, np.integer)):
        raise RecError(f"kappa must be an int, got {type(kappa).__name__}")
    if not KAPPA_MIN <= int(kappa) <= KAPPA_MAX:
        raise RecError(f"kappa must be in [{KAPPA_MIN}, {KAPPA_MAX}], got {kappa}")
    return int(kappa)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise RecError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 1 << 64:
        raise RecError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)


def _check_threads(threads: object) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or int(threads) < 1:
        raise RecError(f"threads must be a positive int or None, got {threads!r}")
    return int(threads)


def _check_temperature(temperature: object) -> float | None:
    if temperature is None:
        return None
    if isinstance(temperature, bool):
        raise RecError(f"temperature must be a number or None, got {temperature!r}")
    try:
        return float(temperature)
    except (TypeError, ValueError):
        raise RecError(f"temperature must be a number or None, got {temperature!r}") from None


def _check_device(device: object) -> str:
    if not isinstance(device, str):
        raise RecError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return device


def _vec(x: object, name: str, n: int | None = None) -> np.ndarray:
    """1-D float32 contiguous array (float64 accepted and converted)."""
    try:
        a = np.asarray(x)
    except Exception as exc:
        raise RecError(f"{name} must be array-like: {exc}") from None
    if a.dtype.kind not in "fiu":
        raise RecError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 1:
        raise RecError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise RecError(f"{name} has {a.shape[0]} elements, expected {n} (shapes must match)")
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(a, dtype=np.float32)


def _gaussians(mu_q, sigma_q, mu_p, sigma_p):
    mq = _vec(mu_q, "mu_q")
    n = mq.shape[0]
    return mq, _vec(sigma_q, "sigma_q", n), _vec(mu_p, "mu_p", n), _vec(sigma_p, "sigma_p", n)


def _check_plan(plan: object, n: int | None = None) -> BlockPlan:
    if not isinstance(plan, BlockPlan):
        raise RecError(f"plan must be a BlockPlan, got {type(plan).__name__}")
    if n is not None and plan.n_dims != n:
        raise RecError(f"plan covers {plan.n_dims} dims but the inputs have {n}")
    return plan


# ----------------------------------------------------------------------------------------------
def kl_bits(mu_q, sigma_q, mu_p, sigma_p) -> np.ndarray:
    """Analytic KL(q || p) per dim, in bits (float64, clipped at 0)."""
    mq, sq, mp, sp = (_vec(v, nm).astype(np.float64) for v, nm in
                      ((mu_q, "mu_q"), (sigma_q, "sigma_q"), (mu_p, "mu_p"), (sigma_p, "sigma_p")))
    n = mq.shape[0]
    if not (sq.shape[0] == mp.shape[0] == sp.shape[0] == n):
        raise RecError("mu_q, sigma_q, mu_p, sigma_p must have the same length")
    for a, nm, pos in ((mq, "mu_q", False), (sq, "sigma_q", True), (mp, "mu_p", False), (sp, "sigma_p", True)):
        if not np.all(np.isfinite(a)):
            raise RecError(f"{nm} contains non-finite values")
        if pos and not np.all(a > 0):
            raise RecError(f"{nm} must be > 0")
    rho = sq / sp
    d = (mq - mp) / sp
    nats = -np.log(rho) + 0.5 * (rho * rho - 1.0) + 0.5 * d * d
    return np.maximum(nats, 0.0) / math.log(2.0)


def encode(mu_q, sigma_q, mu_p, sigma_p, plan: BlockPlan, seed: int, *,
           temperature: float | None = DEFAULT_TEMPERATURE, threads: int | None = None,
           device: str = "cpu") -> np.ndarray:
    """Select one candidate per block; returns the indices (uint32 [n_blocks]).

    ``temperature`` chooses the rule among the 2^k_b candidates z_n:

    * ``None`` (default, the codec's rule): "nearest", the candidate nearest the target
      t = mu_q + s * (mu_q - mu_p) / max(r^2, 1), r = sigma_p / sigma_q, s = REC_NEAREST_SHIFT,
      in the metric sum_j w_j (z_j - t_j)^2, w_j = (1/sigma_q^2 - 1/sigma_p^2)^0.8. That weight
      is the precision the posterior gained over the prior (how much the decoder's output
      depends on the dim), flattened a little (measured better than power 1).
      The nearest of a candidate set drawn from p is pulled towards mu_p; the shift cancels
      that pull. At the same rate it decodes 0.3-0.5 dB better than an importance sample.
    * a number tau >= 0: "tempered", probability proportional to q(z_n)^(1/tau) / p(z_n), i.e.
      importance sampling of the sharpened posterior N(mu_q, tau sigma_q^2). tau = 1 is the
      exact REC (importance) sample of q; tau = 0 takes the candidate most likely under q.

    The rule is encoder-only: decoding does not depend on it. Results depend only on the
    inputs and ``seed`` (not on ``threads`` or ``device``).
    """
    mq, sq, mp, sp = _gaussians(mu_q, sigma_q, mu_p, sigma_p)
    plan = _check_plan(plan, mq.shape[0])
    return _call(_core.encode, mq, sq, mp, sp, plan.lengths, plan.exponents, plan.kappa,
                 _check_seed(seed), _check_temperature(temperature), _check_threads(threads),
                 _check_device(device))


def decode(mu_p, sigma_p, plan: BlockPlan, seed: int, indices, *, threads: int | None = None,
           device: str = "cpu") -> np.ndarray:
    """Regenerate the selected candidates: float32 [n_dims] samples z = mu_p + sigma_p * eps.

    Decoding is O(n) and runs on the CPU for either ``device``; "cuda" is accepted (and checked)
    so that a caller passes one device to both directions."""
    mp = _vec(mu_p, "mu_p")
    sp = _vec(sigma_p, "sigma_p", mp.shape[0])
    plan = _check_plan(plan, mp.shape[0])
    seed = _check_seed(seed)
    idx = _indices(indices, plan)
    return _call(_core.decode, mp, sp, plan.lengths, plan.exponents, plan.kappa, seed, idx,
                 _check_threads(threads), _check_device(device))


def _indices(indices, plan: BlockPlan) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise RecError("indices must be a 1-D integer array")
    if idx.shape[0] != plan.n_blocks:
        raise RecError(f"got {idx.shape[0]} indices for {plan.n_blocks} blocks")
    if idx.size:
        i64 = idx.astype(np.int64) if idx.dtype != np.uint64 else idx
        limit = np.left_shift(np.int64(1), plan.exponents.astype(np.int64))
        bad = np.nonzero((i64 < 0) | (i64 >= limit))[0] if idx.dtype != np.uint64 else np.nonzero(i64 >= limit.astype(np.uint64))[0]
        if bad.size:
            b = int(bad[0])
            raise RecError(f"index {int(idx[b])} of block {b} is out of range for "
                           f"2^{int(plan.exponents[b])} candidates")
    return np.ascontiguousarray(idx, dtype=np.uint32)


def encode_indices(indices, plan: BlockPlan) -> bytes:
    """Pack block b's index MSB-first in exactly k_b bits (zero padding to a byte)."""
    plan = _check_plan(plan)
    idx = _indices(indices, plan)
    return _call(_core.encode_indices, plan.lengths, plan.exponents, plan.kappa, idx)


def decode_indices(data: bytes, plan: BlockPlan) -> np.ndarray:
    """Inverse of :func:`encode_indices`; raises :class:`CorruptDataError` on a wrong size."""
    plan = _check_plan(plan)
    return _call(_core.decode_indices, bytes(data), plan.lengths, plan.exponents, plan.kappa)


def cuda_available() -> bool:
    """True when the extension was built with CUDA and a device is usable."""
    return bool(_core.cuda_available())


def core_info() -> dict:
    """Build facts of the native core (version, kernels, CUDA)."""
    return {
        "version": _core.__version__,
        "api_version": _core.api_version,
        "source_hash": _core.source_hash,
        "debug_build": _core.debug_build,
        "kernels": _core.kernels(),
        "cuda_compiled": _core.cuda_compiled(),
        "cuda": _core.cuda_info(),
    }
