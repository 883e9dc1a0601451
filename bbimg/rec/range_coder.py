"""Range coder for integer symbols (C++ in csrc/range_coder.h), numpy in and out.

Static models take frequency tables (uint32, 1-D ``[A]`` or 2-D ``[C, A]`` with a context per
symbol); each table's total must be in [1, 2**16] and coded symbols need a non-zero frequency.
Adaptive models start from uniform counts and learn as they go (one model per context).
Decoders raise :class:`bbimg.rec.CorruptDataError` on malformed input, including input that is
truncated or has trailing bytes.
"""
from __future__ import annotations

import numpy as np

from bbimg.rec import CorruptDataError, RecError, _call, _core

__all__ = [
    "MAX_TOTAL",
    "quantize_pmf",
    "encode_static",
    "decode_static",
    "encode_adaptive",
    "decode_adaptive",
    "Encoder",
    "Decoder",
    "AdaptiveModel",
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


# ----------------------------------------------------------------------------------------------
# Incremental coding in Python, for short streams whose models change symbol by symbol (the block
# plans: a few hundred symbols). Same arithmetic and stream format as the C++ coder, so a stream
# written here with the models below is byte for byte what encode_adaptive would write.

_TOP = 1 << 24
_MASK32 = 0xFFFF_FFFF


class Encoder:
    """Range encoder (``csrc/range_coder.h`` in Python): :meth:`encode` symbols, :meth:`finish`."""

    def __init__(self) -> None:
        self._low, self._range, self._cache, self._cache_size = 0, _MASK32, 0, 1
        self._skip_first, self._out = True, bytearray()

    def encode(self, start: int, size: int, total: int) -> None:
        """Code the interval [start, start + size) of [0, total) (0 < size, total <= MAX_TOTAL)."""
        if not (0 < size and 0 <= start and start + size <= total <= MAX_TOTAL):
            raise RecError(f"bad interval [{start}, {start + size}) of {total}")
        r = self._range // total
        self._low += r * start
        self._range = r * size
        while self._range < _TOP:
            self._range = (self._range << 8) & _MASK32
            self._shift_low()

    def uniform(self, value: int, n: int) -> None:
        """``value`` in [0, n) with n equally likely values (n <= MAX_TOTAL)."""
        if not 0 <= value < n:
            raise RecError(f"value {value} outside [0, {n})")
        self.encode(value, 1, n)

    def finish(self, shortest: bool = False) -> bytes:
        """The stream. ``shortest``: end on the value of the final interval with the most trailing
        zero bytes and drop all trailing zero bytes (about 3 bytes fewer), for a
        ``Decoder(..., zeros_after_end=True)``; otherwise the C++ coder's exact stream."""
        if shortest:
            high = self._low + self._range
            for k in (4, 3, 2, 1, 0):
                m = 1 << (8 * k)
                value = -(-self._low // m) * m
                if value < high:
                    self._low = value
                    break
        for _ in range(5):
            self._shift_low()
        return bytes(self._out).rstrip(b"\0") if shortest else bytes(self._out)

    def _emit(self, b: int) -> None:
        if self._skip_first:
            self._skip_first = False
        else:
            self._out.append(b)

    def _shift_low(self) -> None:
        low = self._low
        if (low & _MASK32) < 0xFF00_0000 or (low >> 32) != 0:
            carry = (low >> 32) & 0xFF
            temp = self._cache
            while True:
                self._emit((temp + carry) & 0xFF)
                temp = 0xFF
                self._cache_size -= 1
                if self._cache_size == 0:
                    break
            self._cache = (low >> 24) & 0xFF
        self._cache_size += 1
        self._low = (low & 0x00FF_FFFF) << 8


class Decoder:
    """Range decoder for :class:`Encoder` streams. Raises CorruptDataError for a code value no
    interval holds; :meth:`finish` raises unless the input was consumed exactly, or, with
    ``zeros_after_end`` (streams finished ``shortest``), unless every byte was consumed (bytes
    past the end read as zeros)."""

    def __init__(self, data: bytes, zeros_after_end: bool = False) -> None:
        self._data, self._pos, self._missing = bytes(data), 0, 0
        self._pad = zeros_after_end
        self._code, self._range, self._r = 0, _MASK32, 1
        for _ in range(4):
            self._code = (self._code << 8) | self._next()

    def target(self, total: int) -> int:
        """The frequency in [0, total) the next symbol's interval must hold."""
        self._r = self._range // total
        v = self._code // self._r
        if v >= total:
            raise CorruptDataError("range decoder: code value out of range (corrupt data)")
        return v

    def consume(self, start: int, size: int) -> None:
        """Remove the interval [start, start + size) that holds the last :meth:`target`."""
        self._code -= self._r * start
        self._range = self._r * size
        while self._range < _TOP:
            self._code = ((self._code << 8) | self._next()) & _MASK32
            self._range = (self._range << 8) & _MASK32

    def uniform(self, n: int) -> int:
        v = self.target(n)
        self.consume(v, 1)
        return v

    def finish(self, what: str = "stream") -> None:
        if self._missing and not self._pad:
            raise CorruptDataError(f"{what}: truncated data ({self._missing} byte(s) missing)")
        if self._pos != len(self._data):
            raise CorruptDataError(f"{what}: {len(self._data) - self._pos} trailing byte(s) not consumed")

    def _next(self) -> int:
        if self._pos < len(self._data):
            self._pos += 1
            return self._data[self._pos - 1]
        self._missing += 1
        return 0


class AdaptiveModel:
    """Adaptive frequencies as in the C++ coder (counts grow by ``increment`` per coded symbol and
    are halved, rounding up, when the total would exceed ``limit``), optionally starting from
    ``initial`` counts (all >= 1) instead of ones."""

    def __init__(self, n: int, increment: int = 24, limit: int = MAX_TOTAL, initial=None) -> None:
        freq = [1] * n if initial is None else [int(f) for f in initial]
        if not (1 <= n <= 4096 and len(freq) == n and min(freq) >= 1 and increment >= 1
                and sum(freq) + increment <= limit <= MAX_TOTAL):
            raise RecError("bad adaptive model parameters")
        self._freq, self._total, self._inc, self._limit = freq, sum(freq), increment, limit

    def encode(self, enc: Encoder, s: int) -> None:
        if not 0 <= s < len(self._freq):
            raise RecError(f"symbol {s} outside [0, {len(self._freq)})")
        enc.encode(sum(self._freq[:s]), self._freq[s], self._total)
        self._update(s)

    def decode(self, dec: Decoder) -> int:
        target = dec.target(self._total)
        start, s, last = 0, 0, len(self._freq) - 1
        while s < last and start + self._freq[s] <= target:
            start += self._freq[s]
            s += 1
        dec.consume(start, self._freq[s])
        self._update(s)
        return s

    def _update(self, s: int) -> None:
        self._freq[s] += self._inc
        self._total += self._inc
        if self._total > self._limit:
            self._freq = [(f + 1) >> 1 for f in self._freq]
            self._total = sum(self._freq)
