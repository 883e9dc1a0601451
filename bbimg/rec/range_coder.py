"""Range coder for integer symbols (C++ in csrc/range_coder.h), numpy in and out.

Static models take frequency tables (uint32, 1-D ``[A]`` or 2-D ``[C, A]`` with a context per
symbol); each table's total must be in [1, 2**16] and coded symbols need a non-zero frequency.
Adaptive models start from uniform counts and learn as they go (one model per context).
Decoders raise :class:`bbimg.rec.CorruptDataError` on malformed input, including input that is
truncated or has trailing bytes.
"""
from __future__ import annotations

import numpy as np

from bbimg.rec import RecError, _call, _core

__all__ = [
    "MAX_TOTAL",
    "quantize_pmf",
    "encode_static",
    "decode_static",
    "encode_adaptive",
    "decode_adaptive",
]

MAX_TOTAL = int(_core.RC_MAX_TOTAL)


def _ints(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise RecError(f"{name} must be a 1-D integer array")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise RecError(f"{name} values do not fit int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def _freqs(f) -> np.ndarray:
    a = np.asarray(f)
    if a.dtype.kind not in "iu" or a.ndim not in (1, 2):
        raise RecError("freqs must be a 1-D or 2-D integer array")
    if a.size and (a.min() < 0 or a.max() > MAX_TOTAL):
        raise RecError(f"frequencies must be in [0, {MAX_TOTAL}]")
    return np.ascontiguousarray(a, dtype=np.uint32)


def _ctx(contexts):
    return None if contexts is None else _ints(contexts, "contexts")


def _count(count) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise RecError(f"count must be a non-negative int, got {count!r}")
    return int(count)


def quantize_pmf(pmf, precision: int = 16) -> np.ndarray:
    """Frequencies (uint32) summing to 2**precision with every symbol >= 1, close to ``pmf``."""
    p = np.asarray(pmf, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise RecError("pmf must be a non-empty 1-D array of finite non-negative values")
    if not 1 <= precision <= 16 or (1 << precision) < p.size:
        raise RecError("precision must be in [1, 16] and 2**precision >= alphabet size")
    total = 1 << precision
    f = np.maximum(1, np.floor(p / p.sum() * (total - p.size)).astype(np.int64) + 1)
    diff = total - int(f.sum())
    order = np.argsort(-p, kind="stable")
    i = 0
    while diff != 0:  # fix the rounding on the most probable symbols
        j = order[i % p.size]
        if diff > 0:
            f[j] += 1
            diff -= 1
        elif f[j] > 1:
            f[j] -= 1
            diff += 1
        i += 1
    return f.astype(np.uint32)


def encode_static(symbols, freqs, contexts=None) -> bytes:
    """Code ``symbols`` under static ``freqs`` (``contexts[i]`` selects the row of a 2-D table)."""
    return _call(_core.rc_encode_static, _ints(symbols, "symbols"), _freqs(freqs), _ctx(contexts))


def decode_static(data: bytes, freqs, count: int, contexts=None) -> np.ndarray:
    """Decode ``count`` symbols (int32) coded by :func:`encode_static` with the same tables."""
    return _call(_core.rc_decode_static, bytes(data), _freqs(freqs), _count(count), _ctx(contexts))


def encode_adaptive(symbols, alphabet_size: int, contexts=None, n_contexts: int = 1,
                    increment: int = 24, limit: int = MAX_TOTAL) -> bytes:
    """Code ``symbols`` in [0, alphabet_size) with adaptive counts (one model per context)."""
    return _call(_core.rc_encode_adaptive, _ints(symbols, "symbols"), int(alphabet_size),
                 _ctx(contexts), int(n_contexts), int(increment), int(limit))


def decode_adaptive(data: bytes, count: int, alphabet_size: int, contexts=None, n_contexts: int = 1,
                    increment: int = 24, limit: int = MAX_TOTAL) -> np.ndarray:
    """Inverse of :func:`encode_adaptive` (same parameters and contexts)."""
    return _call(_core.rc_decode_adaptive, bytes(data), _count(count), int(alphabet_size),
                 _ctx(contexts), int(n_contexts), int(increment), int(limit))
