"""Range coder: lossless round trips (static and adaptive), error handling, corrupt input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbimg.rec import CorruptDataError, RecError
from bbimg.rec import range_coder as rc

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def static_case(draw):
    alphabet = draw(st.integers(1, 300))
    n_ctx = draw(st.integers(1, 4))
    tables = []
    for _ in range(n_ctx):
        f = draw(st.lists(st.integers(0, 400), min_size=alphabet, max_size=alphabet))
        f[draw(st.integers(0, alphabet - 1))] += 1  # at least one usable symbol
        tables.append(f)
    freqs = np.array(tables, dtype=np.uint32)
    n = draw(st.integers(0, 400))
    ctx = np.array(draw(st.lists(st.integers(0, n_ctx - 1), min_size=n, max_size=n)), dtype=np.int32)
    usable = [np.nonzero(freqs[c])[0] for c in range(n_ctx)]
    picks = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    syms = np.array([usable[c][p % len(usable[c])] for c, p in zip(ctx, picks)], dtype=np.int32)
    return syms, freqs, ctx


@SETTINGS
@given(static_case())
def test_static_roundtrip(case):
    syms, freqs, ctx = case
    data = rc.encode_static(syms, freqs, ctx)
    out = rc.decode_static(data, freqs, len(syms), ctx)
    assert np.array_equal(out, syms)


@SETTINGS
@given(st.lists(st.integers(0, 40), max_size=300), st.integers(1, 3), st.integers(1, 64))
def test_adaptive_roundtrip(symbols, n_ctx, inc):
    syms = np.array(symbols, dtype=np.int32)
    ctx = (np.arange(len(syms)) * 7 % n_ctx).astype(np.int32)
    data = rc.encode_adaptive(syms, 41, ctx, n_ctx, increment=inc)
    assert np.array_equal(rc.decode_adaptive(data, len(syms), 41, ctx, n_ctx, increment=inc), syms)


def test_static_1d_table_and_skewed_probabilities():
    rng = np.random.default_rng(0)
    pmf = np.array([0.9, 0.05, 0.03, 0.02])
    freqs = rc.quantize_pmf(pmf)
    assert freqs.sum() == 1 << 16 and freqs.min() >= 1
    syms = rng.choice(4, size=20000, p=pmf).astype(np.int32)
    data = rc.encode_static(syms, freqs)
    assert np.array_equal(rc.decode_static(data, freqs, len(syms)), syms)
    entropy = -(pmf * np.log2(pmf)).sum() * len(syms) / 8
    assert len(data) < entropy * 1.01 + 16


def test_adaptive_learns_skewed_source():
    rng = np.random.default_rng(1)
    syms = rng.choice(8, size=20000, p=[0.93] + [0.01] * 7).astype(np.int32)
    data = rc.encode_adaptive(syms, 8)
    h = -(0.93 * np.log2(0.93) + 7 * 0.01 * np.log2(0.01)) * len(syms) / 8
    assert len(data) < h * 1.05 + 64
    assert np.array_equal(rc.decode_adaptive(data, len(syms), 8), syms)


def test_long_carry_runs():
    # Many maximal-probability symbols produce long 0xFF runs / carries.
    freqs = np.array([65535, 1], dtype=np.uint32)
    for pattern in (np.zeros(5000), np.r_[np.zeros(3000), [1], np.zeros(3000)], np.ones(50)):
        syms = pattern.astype(np.int32)
        assert np.array_equal(rc.decode_static(rc.encode_static(syms, freqs), freqs, len(syms)), syms)


def test_errors():
    f = np.array([1, 2, 3], dtype=np.uint32)
    with pytest.raises(RecError, match="zero frequency"):
        rc.encode_static([0, 1], np.array([0, 5], dtype=np.uint32))
    with pytest.raises(RecError, match="outside"):
        rc.encode_static([3], f)
    with pytest.raises(RecError):
        rc.encode_static([0], np.array([70000], dtype=np.uint32))
    with pytest.raises(RecError, match="sums to 0"):
        rc.encode_static([], np.array([0, 0], dtype=np.uint32))
    with pytest.raises(RecError, match="contexts are required"):
        rc.encode_static([0], np.ones((2, 3), dtype=np.uint32))
    with pytest.raises(RecError, match="outside"):
        rc.encode_adaptive([5], 5)
    with pytest.raises(ValueError):
        rc.decode_static(b"", f, -1)


def test_truncated_and_trailing_input_raise():
    rng = np.random.default_rng(2)
    syms = rng.integers(0, 3, 500).astype(np.int32)
    f = np.array([5, 9, 2], dtype=np.uint32)
    data = rc.encode_static(syms, f)
    with pytest.raises(CorruptDataError):
        rc.decode_static(data[:-3], f, len(syms))
    with pytest.raises(CorruptDataError):
        rc.decode_static(data + b"\x00", f, len(syms))
    with pytest.raises(CorruptDataError):
        rc.decode_adaptive(rc.encode_adaptive(syms, 3)[:-2], len(syms), 3)


@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 200))
def test_garbage_never_crashes(data, count):
    f = np.array([3, 1, 7, 1], dtype=np.uint32)
    for fn in (lambda: rc.decode_static(data, f, count), lambda: rc.decode_adaptive(data, count, 9)):
        try:
            out = fn()
        except CorruptDataError:
            continue
        assert len(out) == count
