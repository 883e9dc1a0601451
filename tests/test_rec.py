"""REC engine: shared randomness, exact decoding, determinism, selection rules, statistics, errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rec_problems import channel_problem, problem, small_problem

from bbimg import _core, rec
from bbimg.rec import BlockPlan, CorruptDataError, RecError
from bbimg.rec import reference as R
from bbimg.rec._sources import source_hash

#: The kernel sets a build may have, the reference first; a test skips those this CPU lacks.
KERNEL_SETS = ("generic", "avx2", "avx2screen", "avx512vnni")

SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def small():
    return small_problem()


def _scored_blocks(plan: BlockPlan) -> list[int]:
    """A private-path block, the first pool block, a middle and the last block (all with k > 0)."""
    k = plan.exponents
    private = int(np.nonzero((k > 0) & (k < 10))[0][0])
    pool = int(np.nonzero(k >= 10)[0][0])
    picks = [private, pool, plan.n_blocks // 2, plan.n_blocks - 1]
    assert all(k[b] > 0 for b in picks)
    return picks


# --- shared randomness ---------------------------------------------------------------------
def test_philox_known_answers():
    # Random123 kat_vectors for philox4x32_10
    assert _core.philox(0, 0, 0, 0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert _core.philox(2**64 - 1, *(0xFFFFFFFF,) * 4) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert _core.philox(0x299F31D0A4093822, 0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344) == (
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


@pytest.mark.parametrize("seed", [0, 99, 2**63 + 5])
def test_normals_bit_identical_everywhere(seed):
    scalar = _core.pool_normals(seed, 4096, 1000, 23, scalar=True)
    ref = R.pool_normals(seed, 4096, 1000, 23)
    assert np.array_equal(scalar.view(np.uint32), ref.view(np.uint32))
    for k in KERNEL_SETS:
        if not _core.set_kernels(k):
            continue
        try:
            tile = _core.pool_normals(seed, 4096, 1000, 23)
            priv = _core.private_normals(seed, 2**32 + 7, 300, 9)
        finally:
            _core.set_kernels("auto")
        assert np.array_equal(tile.view(np.uint32), scalar.view(np.uint32)), k
        assert np.array_equal(priv.view(np.uint32),
                              _core.private_normals(seed, 2**32 + 7, 300, 9, scalar=True).view(np.uint32)), k


def test_regenerated_row_groups_and_screen_words_in_every_kernel_set():
    """Rows generated again in 8-row groups (gen_pool's starts) are the pool's rows, and a compact
    screen tile's words (gen_pool_words where the set has it) are the rounded normals of its quads."""
    seed, starts, cols = 2**40 + 3, np.array([8, 4096, 16, 2**32 - 8, 72], np.uint32), 21
    want = np.concatenate([_core.pool_normals(seed, int(s), 8, cols, scalar=True) for s in starts])
    quads = np.array([5, 0, 17, 3], np.int32)
    tile = np.concatenate([R.pool_normals(seed, 1024, 128, 4 * 18)[:, 4 * q:4 * q + 4] for q in quads], axis=1)
    q1 = np.rint(tile * np.float32(4096)).astype(np.int64)
    q2 = np.rint((tile * tile) * np.float32(512)).astype(np.int64)
    words = ((q2 & 0xFFFF) | ((q1 & 0xFFFF) << 16)).astype(np.uint32)
    for k in KERNEL_SETS:
        if not _core.set_kernels(k):
            continue
        try:
            got = _core.pool_normals_groups(seed, starts, cols)
            w = _core.pool_words(seed, 1024, 128, quads)
        finally:
            _core.set_kernels("auto")
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), k
        if w.size:
            assert np.array_equal(w, words), k


def _refined_rows_numpy(a, c, seg_n, seg_t, ug, E, E2, row_off):
    """RecScreen::refined_rows' sums and chain bounds in numpy float64, operation by operation."""
    rows = (row_off[:, None] + np.arange(8)).ravel()
    W = np.zeros(rows.size)
    ch = np.zeros(rows.size)
    for t in range(a.size):
        w1 = W + a[t] * E2[t, rows].astype(np.float64)
        w2 = w1 + c[t] * E[t, rows].astype(np.float64)
        ch = ch + (ug * (np.abs(w1) + np.abs(w2)) + np.minimum(seg_n[t] * ug * np.abs(w2), seg_t[t]))
        W = w2
    return W, ch


@given(st.integers(0, 14), st.integers(0, 6), st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_refined_row_bounds_in_every_kernel_set(cols, groups, seed):
    """A wide block's refined sums and chain bounds (the rows its screen bound cannot rule out) are
    the numpy float64 values of the same operations, bit for bit, in every kernel set: odd and even
    group counts, weights from the prior-skipped scale to the 1e30 clamp, chain terms that do and
    do not bound a step."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-9, 30, cols)
    a = -np.abs(rng.standard_normal(cols)) * scale
    a[rng.random(cols) < 0.2] *= -1.0
    c = rng.standard_normal(cols) * scale
    seg_n = rng.integers(0, 3000, cols).astype(np.float64)
    seg_t = np.abs(rng.standard_normal(cols)) * 10.0 ** rng.uniform(-12, 3, cols)
    ug = 2.0 ** -24 * (1.0 + 1e-3 * rng.random())
    ld = 64
    E = rng.standard_normal((cols, ld)).astype(np.float32)
    E2 = E * E
    row_off = rng.integers(0, ld - 7, groups).astype(np.int64)
    want = _refined_rows_numpy(a, c, seg_n, seg_t, ug, E, E2, row_off)
    for k in KERNEL_SETS:
        if not _core.set_kernels(k):
            continue
        try:
            got = _core.refined_rows(a, c, seg_n, seg_t, ug, E, E2, row_off)
        finally:
            _core.set_kernels("auto")
        for g, w in zip(got, want):
            assert np.array_equal(g.view(np.uint64), w.view(np.uint64)), k


@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.integers(0, 2**40), st.integers(0, 2**20))
@settings(max_examples=25, deadline=None)
def test_screen_words_of_chosen_box_muller_pairs(pairs, seed, n0):
    """A compact tile's words with only some Box-Muller pairs of each quad (bit 0: columns 0-1, bit
    1: columns 2-3; the pairs its blocks weigh): those columns' words are the full tile's, bit for
    bit, in every kernel set (the others may leave the rest at 0)."""
    quads = np.arange(len(pairs), dtype=np.int32) * 7 + 3
    pairs = np.array(pairs, np.uint8)
    n0 = n0 * 64
    for k in KERNEL_SETS:
        if not _core.set_kernels(k):
            continue
        try:
            full = _core.pool_words(seed, n0, 128, quads)
            some = _core.pool_words(seed, n0, 128, quads, pairs)
        finally:
            _core.set_kernels("auto")
        if not full.size:
            continue
        for i, p in enumerate(pairs):
            for half in (0, 1):
                cols = slice(4 * i + 2 * half, 4 * i + 2 * half + 2)
                if p >> half & 1:
                    assert np.array_equal(some[:, cols], full[:, cols]), (k, i, half)


def test_normals_are_standard_normal():
    z = _core.pool_normals(7, 0, 1 << 15, 32).astype(np.float64).ravel()  # 1M values
    assert abs(z.mean()) < 0.005
    assert abs(z.var() - 1) < 0.006
    assert abs((z**4).mean() - 3) < 0.03
    assert abs((z < -2).mean() - 0.02275) < 0.0012


@given(st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.0, 7.25, 7.25, -np.inf, 3.0]) | st.floats(-1e6, 1e6, width=32),
                min_size=1, max_size=300))
@settings(max_examples=200, deadline=None)
def test_argmax_is_the_first_maximum_in_every_kernel_set(values):
    """Each kernel set's argmax is the first index of the maximum, and returns that element's own
    value (so among +0 and -0 the first one's sign), whatever the length (tails of 8, 32 rows)."""
    x = np.array(values, np.float32)
    want = int(np.argmax(x))  # numpy: the first occurrence; +0 == -0
    for kernels in KERNEL_SETS:
        if not _core.set_kernels(kernels):
            continue
        try:
            m, idx = _core.argmax(x)
        finally:
            _core.set_kernels("auto")
        assert idx == want, (kernels, idx, want)
        assert np.float32(m).tobytes() == x[want].tobytes(), kernels


def test_exp_weights():
    y = -np.linspace(0, 35, 2003).astype(np.float32)
    w = _core.exp_weights(y)
    ref = np.where(y >= -30, np.exp(y.astype(np.float64)), 0.0)
    assert w[0] == 1.0
    assert np.max(np.abs(w - ref) / np.maximum(ref, 1e-300)) < 5e-7
    _core.set_kernels("generic")
    try:
        assert np.array_equal(_core.exp_weights(y).view(np.uint32), w.view(np.uint32))
    finally:
        _core.set_kernels("auto")


def test_kl_bits_analytic():
    kl = rec.kl_bits([1.0, 0.0], [0.5, 1.0], [0.0, 0.0], [1.0, 1.0])
    assert kl[0] == pytest.approx((math.log(2) + (0.25 + 1) / 2 - 0.5) / math.log(2))
    assert kl[1] == 0.0


# --- index packing --------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 2000), st.integers(0, 16)), max_size=60))
def test_indices_roundtrip(blocks):
    lens = np.array([b[0] for b in blocks], dtype=np.int32)
    ks = np.array([b[1] for b in blocks], dtype=np.uint8)
    plan = BlockPlan(lens, ks, 16)
    rng = np.random.default_rng(len(blocks))
    idx = np.array([rng.integers(0, 1 << int(k)) for k in ks], dtype=np.uint32)
    data = rec.encode_indices(idx, plan)
    assert len(data) == (plan.index_bits + 7) // 8
    assert np.array_equal(rec.decode_indices(data, plan), idx)


# --- encoder / decoder -------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [None, 1.0])
def test_decode_is_the_encoders_candidate(small, tau):
    mq, sq, mp, sp, plan = small
    idx = rec.encode(mq, sq, mp, sp, plan, seed=11, temperature=tau)
    z = rec.decode(mp, sp, plan, 11, idx)
    assert z.dtype == np.float32 and z.shape == mq.shape
    blocks = list(range(0, plan.n_blocks, max(1, plan.n_blocks // 40)))
    blocks += [int(b) for b in np.nonzero(plan.exponents < 10)[0][:5]]  # private-path blocks
    for b in blocks:
        s, L = int(plan.starts[b]), int(plan.lengths[b])
        cand = _core.debug_candidate(mp, sp, plan.lengths, plan.exponents, plan.kappa, 11, b, int(idx[b]))
        assert np.array_equal(cand.view(np.uint32), z[s:s + L].view(np.uint32)), b
    # the NumPy reference regenerates the same bits too
    ref = R.decode(mp, sp, plan, 11, idx)
    assert np.array_equal(ref.view(np.uint32), z.view(np.uint32))


@pytest.mark.parametrize("tau", [None, 0.0, 0.5, 2.0])
def test_argmax_and_scores(small, tau):
    mq, sq, mp, sp, plan = small
    idx = rec.encode(mq, sq, mp, sp, plan, seed=3, temperature=tau)
    for b in _scored_blocks(plan):
        x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, plan.kappa, 3, tau, b)
        if not tau:  # None (nearest) and 0 (most likely under q) take the best score
            assert int(idx[b]) == int(np.argmax(x))
        # kernel scores agree with the float64 selection score of the regenerated candidates
        rows = np.array([0, 1, int(idx[b]), len(x) - 1])
        z = R.candidates(mp, sp, plan, 3, b, rows=rows)
        lw = R.log_weights(mq, sq, mp, sp, z, int(plan.starts[b]), tau)
        d = (x[rows] - x[rows[0]]) - (lw - lw[0])
        assert np.allclose(d, 0, atol=1e-3 * (1 + np.abs(lw).max()))


@pytest.mark.parametrize("tau", [None, 0.0])
def test_reference_encoder_agrees(small, tau):
    mq, sq, mp, sp, plan = small
    blocks = np.arange(0, plan.n_blocks, 3)
    ref = R.encode(mq, sq, mp, sp, plan, 5, temperature=tau, blocks=blocks)
    idx = rec.encode(mq, sq, mp, sp, plan, seed=5, temperature=tau)
    assert np.mean(idx[blocks] == ref[blocks]) > 0.9
    for b in blocks:
        if idx[b] != ref[b]:  # only near-ties may differ (float32 vs float64 scores)
            z = R.candidates(mp, sp, plan, 5, int(b), rows=[int(idx[b]), int(ref[b])])
            lw = R.log_weights(mq, sq, mp, sp, z, int(plan.starts[b]), tau)
            assert lw[1] - lw[0] < 1e-3 * (1 + abs(lw[1]))


@pytest.mark.parametrize("tau", [None, 0.5, 1.0])
def test_thread_count_and_kernel_set_do_not_matter(small, tau):
    mq, sq, mp, sp, plan = small
    base = rec.encode(mq, sq, mp, sp, plan, seed=21, temperature=tau, threads=1)
    for t in (2, 3):
        assert np.array_equal(rec.encode(mq, sq, mp, sp, plan, seed=21, temperature=tau, threads=t), base)
    for kernels in KERNEL_SETS:
        if not _core.set_kernels(kernels):
            continue
        try:
            assert np.array_equal(rec.encode(mq, sq, mp, sp, plan, seed=21, temperature=tau, threads=2), base), kernels
        finally:
            _core.set_kernels("auto")
    assert not np.array_equal(rec.encode(mq, sq, mp, sp, plan, seed=22, temperature=tau), base)


@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 13)), min_size=1, max_size=12),
       st.sampled_from([None, 0.0, 1.0]), st.integers(0, 2**32))
@settings(max_examples=25, deadline=None)
def test_kernel_sets_give_the_same_scores_and_indices(blocks, tau, seed):
    """Every kernel set this CPU has gives the generic set's scores bit for bit (pool and private
    blocks, groups of mixed widths, chunks whose rows are not a multiple of 64) and its indices."""
    lengths = np.array([n for n, _ in blocks], np.int32)
    exps = np.array([k for _, k in blocks], np.uint8)
    plan = BlockPlan(lengths, exps, 16)
    mq, sq, mp, sp = problem(int(lengths.sum()), 2.0, seed=seed % 1000)

    def run():
        scores = [_core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, seed, tau, b)
                  for b in range(plan.n_blocks)]
        return scores, rec.encode(mq, sq, mp, sp, plan, seed=seed, temperature=tau)

    _core.set_kernels("generic")
    try:
        want_scores, want_idx = run()
        for kernels in KERNEL_SETS[1:]:
            if not _core.set_kernels(kernels):
                continue
            scores, idx = run()
            assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(scores, want_scores)), kernels
            assert np.array_equal(idx, want_idx), kernels
    finally:
        _core.set_kernels("auto")


def test_normals_stay_inside_the_screen_bounds():
    """The integer screen's int32 headroom and error bound assume |e| and e^2 below
    _core.screen_normal_bounds. Every radius class (2^23) and every angle in the two octant kinds
    (the others are exact swaps and sign flips) stays inside."""
    e_max, e2_max = _core.screen_normal_bounds
    r2 = R._neg2log(np.arange(2**23, dtype=np.uint32) << np.uint32(9)).max()
    t = np.arange(2**21 + 1, dtype=np.uint32) << np.uint32(8)
    trig = max(float(np.abs(v).max()) for w in (t, t | np.uint32(1 << 29)) for v in R._sincos(w))
    assert r2 < 33.2711 and trig <= 1.0
    z = np.float32(np.sqrt(r2)) * np.float32(trig)
    assert z < e_max and np.float32(z * z) < e2_max


def _indices_in_every_kernel_set(mq, sq, mp, sp, plan, seed, tau):
    """The generic set's indices, after checking every other set this CPU has gives the same."""
    _core.set_kernels("generic")
    try:
        want = rec.encode(mq, sq, mp, sp, plan, seed=seed, temperature=tau)
        for kernels in KERNEL_SETS[1:]:
            if _core.set_kernels(kernels):
                for threads in (1, 2):
                    got = rec.encode(mq, sq, mp, sp, plan, seed=seed, temperature=tau, threads=threads)
                    assert np.array_equal(got, want), (kernels, threads)
    finally:
        _core.set_kernels("auto")
    return want


@given(st.integers(1, 700), st.integers(10, 13), st.floats(-12, 3), st.floats(0, 6),
       st.sampled_from([None, 0.0]), st.integers(0, 2**32))
@settings(max_examples=30, deadline=None)
def test_screened_search_picks_the_exact_argmax(length, k, log_ratio, log_shift, tau, seed):
    """The integer screen (avx512vnni) rescales each block's weights to fit int16 and exact int32
    sums, then rescores exactly only the rows its error bound cannot rule out. Posteriors from
    10^-12 to 10^3 prior widths and mean shifts up to 10^6 prior widths (weights up to the 1e30
    clamp), blocks of 1 to 700 dims: the index is the exact argmax, the generic set's."""
    rng = np.random.default_rng(seed % 2**32)
    n = 3 * length
    mp = rng.normal(0, 1, n).astype(np.float32)
    sp = np.exp(rng.normal(0, 0.5, n)).astype(np.float32)
    sq = (sp * 10.0 ** (log_ratio + rng.uniform(-1, 0, n))).astype(np.float32)
    mq = (mp + sp * rng.normal(0, 1, n) * 10.0 ** (log_shift * rng.uniform(0, 1, n))).astype(np.float32)
    plan = BlockPlan(np.full(3, length, np.int32), np.full(3, k, np.uint8), 16)
    idx = _indices_in_every_kernel_set(mq, sq, mp, sp, plan, seed, tau)
    for b in range(3):
        x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, seed, tau, b)
        assert int(idx[b]) == int(np.argmax(x))  # numpy's argmax is the first maximum too


@pytest.mark.parametrize("tau", [None, 0.5])
def test_wide_and_narrow_groups_in_one_chunk(tau):
    """Pool blocks too wide for a full-chunk tile (> 1024 dims) are scored in row slices of one
    shared tile, in work items apart from the narrow ones (which keep the full tile and the
    screen): every kernel set picks the exact argmax."""
    lengths = np.array([20, 1500, 30, 2600, 1100, 8, 1300, 40, 1030], np.int32)
    exps = np.array([12, 12, 12, 11, 12, 10, 11, 11, 12], np.uint8)
    plan = BlockPlan(lengths, exps, 16)
    mq, sq, mp, sp = problem(int(lengths.sum()), 60.0, seed=4)
    idx = _indices_in_every_kernel_set(mq, sq, mp, sp, plan, 3, tau)
    if tau is None:
        for b in range(plan.n_blocks):
            x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, 3, tau, b)
            assert int(idx[b]) == int(np.argmax(x))


def _blocks_of_mostly_silent_dims(lengths, informative, seed, flat=False):
    """Dims where the posterior equals the prior (the codec's prior-skipped dims: weights ~1e-7,
    which round to 0 in the screen beside the block's informative dims), with a fraction
    ``informative`` of dims that carry bits (``flat``: barely, so that many candidates tie)."""
    rng = np.random.default_rng(seed)
    n = int(np.sum(lengths))
    mp = rng.normal(0, 1, n).astype(np.float32)
    sp = np.exp(rng.normal(0, 0.5, n)).astype(np.float32)
    mq, sq = mp.copy(), sp.copy()
    on = rng.random(n) < informative
    if flat:
        sq[on] *= np.float32(0.999)
    else:
        sq[on] = sp[on] * np.float32(0.3)
        mq[on] = mp[on] + sp[on] * rng.normal(0, 1.5, int(on.sum())).astype(np.float32)
    return mq, sq, mp, sp


@given(st.lists(st.integers(1025, 6000), min_size=1, max_size=5), st.sampled_from([0.002, 0.01, 0.05, 0.5]),
       st.integers(10, 11), st.booleans(), st.integers(0, 2**32))
@settings(max_examples=12, deadline=None)
def test_screen_of_wide_blocks_of_mostly_silent_dims(wide, informative, k, flat, seed):
    """Blocks wider than a full-chunk tile whose dims are mostly silent (smooth photos): the screen
    scores them on a tile of only the pool columns they weigh and generates the rows it rescores
    again, whole; where they weigh too many columns they keep the fp32 row slices. Narrow blocks
    of the same kind go through the per-block column lists. Every kernel set and thread count
    picks the exact argmax."""
    lengths = np.array(wide + [40, 700, 300, 1000], np.int32)
    exps = np.full(lengths.size, k, np.uint8)
    plan = BlockPlan(lengths, exps, 16)
    mq, sq, mp, sp = _blocks_of_mostly_silent_dims(lengths, informative, seed % 2**32, flat)
    idx = _indices_in_every_kernel_set(mq, sq, mp, sp, plan, seed, None)
    for b in range(plan.n_blocks):
        x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, seed, None, b)
        assert int(idx[b]) == int(np.argmax(x))


@given(st.lists(st.tuples(st.integers(1025, 5000), st.integers(10, 12)), min_size=2, max_size=6),
       st.sampled_from([0.002, 0.01]), st.integers(0, 2**32))
@settings(max_examples=10, deadline=None)
def test_wide_groups_of_different_sizes_screened_from_one_tile(wide, informative, seed):
    """Wide blocks of mostly silent dims in groups of different lengths and candidate counts: their
    chunks are screened from one tile of the pool quads any of them weighs (each group's columns
    placed in it, a group with fewer chunks leaving the later ones), and every kernel set still
    picks the exact argmax."""
    lengths = np.array([w for w, _ in wide] + [60, 500], np.int32)
    plan = BlockPlan(lengths, np.array([k for _, k in wide] + [12, 11], np.uint8), 16)
    mq, sq, mp, sp = _blocks_of_mostly_silent_dims(lengths, informative, seed % 2**32)
    idx = _indices_in_every_kernel_set(mq, sq, mp, sp, plan, seed, None)
    for b in range(plan.n_blocks):
        x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, seed, None, b)
        assert int(idx[b]) == int(np.argmax(x))


@given(st.lists(st.integers(1100, 5000), min_size=1, max_size=2), st.integers(1, 3), st.sampled_from([10.0, 300.0]),
       st.integers(11, 13), st.integers(0, 2**32))
@settings(max_examples=8, deadline=None)
def test_wide_blocks_decided_by_their_silent_dims(wide, informative, shift, k, seed):
    """Blocks of thousands of dims of which 1 to 3 carry bits; the others have the prior's width
    (near-zero weights, 0 in the screen) but a mean ``shift`` prior widths off, so their terms,
    though each below half a screen step, decide between candidates that score alike in the few
    weighed dims. Such blocks take their chunks in the order of their screened maxima and rule rows
    out by refined bounds (the weighed dims in double precision, what the others can add, the fp32
    chain's rounding from each row's own partial sums) before any exact score: the index is still
    the exact argmax, the first on ties, in every kernel set."""
    rng = np.random.default_rng(seed % 2**32)
    lengths = np.array(wide + [300], np.int32)
    plan = BlockPlan(lengths, np.full(lengths.size, k, np.uint8), 16)
    n = int(lengths.sum())
    mp = rng.normal(0, 1, n).astype(np.float32)
    sp = np.exp(rng.normal(0, 0.3, n)).astype(np.float32)
    sq = sp.copy()
    mq = mp + sp * rng.normal(0, shift, n).astype(np.float32)
    for b in range(plan.n_blocks):
        on = int(plan.starts[b]) + rng.choice(int(plan.lengths[b]), informative, replace=False)
        sq[on] = sp[on] * np.float32(0.2)
        mq[on] = mp[on] + sp[on] * rng.normal(0, 1, informative).astype(np.float32)
    idx = _indices_in_every_kernel_set(mq, sq, mp, sp, plan, seed, None)
    for b in range(plan.n_blocks):
        x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, seed, None, b)
        assert int(idx[b]) == int(np.argmax(x))


def test_every_candidate_scoring_alike_picks_the_first():
    """Posteriors 1e30 times wider than the prior with its mean: every weight rounds to 0 in
    float32, so every candidate of every chunk scores exactly 0. The pick is candidate 0 (the first
    chunk, its first row) with every kernel set, whether a block's chunks go through a table of
    chunk statistics or straight into its running winner."""
    lengths = np.array([5, 40, 1100, 3], np.int32)
    plan = BlockPlan(lengths, np.array([12, 11, 10, 9], np.uint8), 16)
    n = int(lengths.sum())
    mp = np.linspace(-1, 1, n).astype(np.float32)
    sp = np.full(n, 0.5, np.float32)
    for tau in (0.0, 1.0):
        idx = _indices_in_every_kernel_set(mp, sp * np.float32(1e30), mp, sp, plan, 11, tau)
        if tau == 0.0:
            assert idx.tolist() == [0, 0, 0, 0]


def test_screened_search_on_nearly_flat_posteriors():
    """Blocks whose posterior equals the prior in every dim but one slightly narrower dim: the
    weights are tiny and many candidates score nearly alike, so the screen's bound is wide against
    the spread of the scores; the first maximum must still win."""
    n = 64
    mp = np.zeros(n, np.float32)
    sp = np.ones(n, np.float32)
    mq, sq = mp.copy(), sp.copy()
    sq[::8] = 0.999
    plan = BlockPlan(np.full(8, 8, np.int32), np.full(8, 12, np.uint8), 16)
    for tau in (None, 0.0):
        idx = _indices_in_every_kernel_set(mq, sq, mp, sp, plan, 5, tau)
        for b in range(8):
            x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, 5, tau, b)
            assert int(idx[b]) == int(np.argmax(x))


@pytest.mark.parametrize("tau", [None, 1.0])
def test_blocks_are_independent(small, tau):
    mq, sq, mp, sp, plan = small
    base = rec.encode(mq, sq, mp, sp, plan, seed=8, temperature=tau)
    b = plan.n_blocks // 3
    s, L = int(plan.starts[b]), int(plan.lengths[b])
    mq2, sq2 = mq.copy(), sq.copy()
    mq2[s:s + L] += 0.7 * sq[s:s + L]
    sq2[s:s + L] *= 0.8
    other = rec.encode(mq2, sq2, mp, sp, plan, seed=8, temperature=tau)
    keep = np.arange(plan.n_blocks) != b
    assert np.array_equal(other[keep], base[keep])


def _coded_samples(mq, sq, mp, sp, k, seeds, tau=1.0):
    n = len(mq)
    plan = BlockPlan(np.array([n], np.int32), np.array([k], np.uint8), max(k, 8))
    out = np.empty((len(seeds), n))
    for i, s in enumerate(seeds):
        idx = rec.encode(mq, sq, mp, sp, plan, s, temperature=tau, threads=1)
        out[i] = rec.decode(mp, sp, plan, s, idx)
    return out


@pytest.mark.parametrize("k", [9, 12])  # private path and shared pool
def test_tau1_samples_follow_the_posterior(k):
    # 1-D (k=9, private candidates) and 4-D (k=12, shared pool) targets, KL ~1.2 / ~4 bits.
    if k == 9:
        mq, sq, mp, sp = (np.array([v], np.float32) for v in (1.0, 0.5, 0.0, 1.0))
    else:
        mq = np.array([0.8, -0.5, 0.3, 1.2], np.float32)
        sq = np.array([0.5, 0.6, 0.8, 0.7], np.float32)
        mp = np.array([0.0, 0.1, -0.2, 0.5], np.float32)
        sp = np.array([1.0, 1.2, 0.9, 1.1], np.float32)
    z = _coded_samples(mq, sq, mp, sp, k, range(1200))
    se = sq / math.sqrt(len(z))
    assert np.all(np.abs(z.mean(0) - mq) < 4.5 * se), (z.mean(0), mq)
    ratio = z.var(0) / sq**2
    assert np.all(np.abs(ratio - 1) < 0.17), ratio


def test_tempered_selection_sharpens_the_posterior():
    mq, sq, mp, sp = (np.array([v], np.float32) for v in (1.0, 0.5, 0.0, 1.0))
    z0 = _coded_samples(mq, sq, mp, sp, 9, range(300), tau=0.0)
    assert ((z0 - mq) ** 2).mean() < 0.05 * sq[0] ** 2  # the candidate most likely under q
    # "nearest" aims at mu_q + REC_NEAREST_SHIFT (mu_q - mu_p) / r^2 = 1.5 here (a lone dim, many
    # candidates)
    zn = _coded_samples(mq, sq, mp, sp, 9, range(100), tau=None)
    assert abs(zn.mean() - 1.5) < 0.05
    zh = _coded_samples(mq, sq, mp, sp, 9, range(1500), tau=0.25)  # ~ N(mu_q, sigma_q^2 / 4)
    assert abs(zh.var() / (0.25 * sq[0] ** 2) - 1) < 0.2
    assert abs(zh.mean() - mq[0]) < 5 * math.sqrt(0.25 / 1500) * sq[0]


def _many_dims_problem(channels=12, positions=250, seed=4):
    """Latents like a codec's: most dims weakly informative, some strongly; ~0.5 bit per dim;
    planned per channel as the codec plans them (kappa 12)."""
    from bbimg.rec.channel_plan import DEFAULT_BLOCK_RATIO, channel_plan, plan_from_channels

    rng = np.random.default_rng(seed)
    n = channels * positions
    sp = np.exp(rng.normal(0, 0.3, n)).astype(np.float32)
    mp = rng.normal(0, 1, n).astype(np.float32)
    sq = (sp * np.exp(-rng.exponential(0.4, n))).astype(np.float32)
    mq = (mp + sp * rng.normal(0, 0.6, n)).astype(np.float32)
    kl = rec.kl_bits(mq, sq, mp, sp).reshape(channels, positions)
    plan = plan_from_channels(*channel_plan(kl, 12, DEFAULT_BLOCK_RATIO), positions, 12)
    return mq, sq, mp, sp, plan


def test_nearest_rule_is_closer_than_a_sample_and_debiased():
    # Why the default rule: at the same plan (same bits) the candidate nearest mu_q in the decoder's
    # metric is much closer than an importance sample, but pulled towards mu_p (the candidates
    # come from p). The shifted target of the engine's rule removes most of that pull and stays
    # no farther from mu_q than a sample. The unshifted rule is run on the NumPy reference, which
    # takes the shift as a parameter; on the codec's per-channel plans (docs/rec.md section 5).
    mq, sq, mp, sp, plan = _many_dims_problem()
    w = np.maximum((sp / sq) ** 2 - 1, 0) / sp**2
    direction = np.sign(mq - mp) / sq

    def stats(idx):
        z = rec.decode(mp, sp, plan, 6, idx)
        return (w * (z - mq) ** 2).sum() / (w * sq**2).sum(), ((z - mq) * direction).mean()

    dist_sample, _ = stats(rec.encode(mq, sq, mp, sp, plan, 6, temperature=1.0))
    dist_near, bias_near = stats(rec.encode(mq, sq, mp, sp, plan, 6))
    dist_plain, bias_plain = stats(R.encode(mq, sq, mp, sp, plan, 6, shift=0.0))
    assert dist_plain < 0.8 * dist_sample
    assert bias_plain < -0.1  # pulled towards mu_p
    assert abs(bias_near) < 0.5 * abs(bias_plain)
    assert dist_near < dist_sample


def test_zero_kl_blocks_and_empty_input():
    _, _, mp, sp, plan = channel_problem((0.0, 0.0, 0.0), 50, 16)
    assert plan.index_bits == 0
    idx = rec.encode(mp, sp, mp, sp, plan, 1)
    assert np.all(idx == 0) and rec.encode_indices(idx, plan) == b""
    # a 0-bit block decodes the fixed prior sample: candidate 0 of its private stream
    z = rec.decode(mp, sp, plan, 1, idx)
    assert np.array_equal(z.view(np.uint32), R.decode(mp, sp, plan, 1, idx).view(np.uint32))
    e = np.zeros(0, np.float32)
    p0 = BlockPlan(np.zeros(0, np.int32), np.zeros(0, np.uint8), 16)
    assert rec.encode(e, e, e, e, p0, 0).shape == (0,)
    assert rec.decode(e, e, p0, 0, np.zeros(0, np.uint32)).shape == (0,)
    assert rec.encode_indices(np.zeros(0, np.uint32), p0) == b""


def test_float64_inputs_accepted(small):
    mq, sq, mp, sp, plan = small
    a = rec.encode(mq, sq, mp, sp, plan, seed=4)
    b = rec.encode(*(x.astype(np.float64) for x in (mq, sq, mp, sp)), plan, seed=4)
    assert np.array_equal(a, b)


# --- errors --------------------------------------------------------------------------------------
def test_input_errors(small):
    mq, sq, mp, sp, plan = small
    enc = lambda *a, **k: rec.encode(*a, **k)  # noqa: E731
    bad_sigma = sq.copy()
    bad_sigma[5] = 0.0
    with pytest.raises(ValueError, match=r"sigma_q\[5\] must be > 0"):
        enc(mq, bad_sigma, mp, sp, plan, 1)
    bad_sigma[5] = -1.0
    with pytest.raises(RecError, match="must be > 0"):
        enc(mq, bad_sigma, mp, sp, plan, 1)
    for v in (np.nan, np.inf):
        s2 = sp.copy()
        s2[2] = v
        with pytest.raises(RecError, match=r"sigma_p\[2\] is not finite"):
            enc(mq, sq, mp, s2, plan, 1)
        m2 = mq.copy()
        m2[7] = v
        with pytest.raises(RecError, match=r"mu_q\[7\] is not finite"):
            enc(m2, sq, mp, sp, plan, 1)
        with pytest.raises(RecError, match="not finite"):
            rec.decode(np.where(np.arange(len(mp)) == 3, v, mp), sp, plan, 1, np.zeros(plan.n_blocks, np.uint32))
    with pytest.raises(RecError, match="expected"):
        enc(mq, sq[:-1], mp, sp, plan, 1)
    with pytest.raises(RecError, match="1-D"):
        enc(mq.reshape(-1, 1), sq, mp, sp, plan, 1)
    with pytest.raises(RecError, match="plan covers"):
        enc(mq[:-1], sq[:-1], mp[:-1], sp[:-1], plan, 1)
    with pytest.raises(RecError, match="seed"):
        enc(mq, sq, mp, sp, plan, -1)
    with pytest.raises(RecError, match="seed"):
        enc(mq, sq, mp, sp, plan, 2**64)
    with pytest.raises(RecError, match="temperature"):
        enc(mq, sq, mp, sp, plan, 1, temperature=-0.5)
    for bad in (float("nan"), float("inf"), "hot", True):
        with pytest.raises(RecError, match="temperature"):
            enc(mq, sq, mp, sp, plan, 1, temperature=bad)
    with pytest.raises(RecError, match="threads"):
        enc(mq, sq, mp, sp, plan, 1, threads=0)
    for bad in ("tpu", None, "CUDA"):
        with pytest.raises(RecError, match="device"):
            enc(mq, sq, mp, sp, plan, 1, device=bad)
        with pytest.raises(RecError, match="device"):
            rec.decode(mp, sp, plan, 1, np.zeros(plan.n_blocks, np.uint32), device=bad)
    with pytest.raises(RecError, match="float32 overflow|not finite"):
        enc(np.full(len(mq), 1e300), sq, mp, sp, plan, 1)


@pytest.mark.parametrize("kappa", [7, 25, 0, -3])
def test_kappa_range(kappa):
    with pytest.raises(RecError, match="kappa"):
        BlockPlan(np.ones(1, np.int32), np.zeros(1, np.uint8), kappa)


def test_plan_and_index_errors(small):
    mq, sq, mp, sp, plan = small
    idx = rec.encode(mq, sq, mp, sp, plan, 1)
    bad = idx.astype(np.int64)
    bad[0] = 1 << int(plan.exponents[0])
    with pytest.raises(RecError, match="out of range"):
        rec.decode(mp, sp, plan, 1, bad)
    bad[0] = -1
    with pytest.raises(RecError, match="out of range"):
        rec.decode(mp, sp, plan, 1, bad)
    with pytest.raises(RecError, match="indices for"):
        rec.decode(mp, sp, plan, 1, idx[:-1])
    with pytest.raises(RecError, match="exponent"):
        rec.encode(mq, sq, mp, sp, BlockPlan(plan.lengths, np.full(plan.n_blocks, 13, np.uint8), 12), 1)
    with pytest.raises(RecError, match="length"):
        rec.encode_indices(np.zeros(2, np.uint32), BlockPlan(np.array([0, 5], np.int32), np.zeros(2, np.uint8), 12))
    too_long = BlockPlan(np.array([rec.MAX_BLOCK_LEN + 1], np.int32), np.zeros(1, np.uint8), 12)
    with pytest.raises(RecError, match="length"):
        rec.decode_indices(b"", too_long)


def test_corrupt_indices_raise(small):
    mq, sq, mp, sp, plan = small
    data = rec.encode_indices(rec.encode(mq, sq, mp, sp, plan, 1), plan)
    for bad in (data[:-1], data + b"\x00"):
        with pytest.raises(CorruptDataError):
            rec.decode_indices(bad, plan)
    if plan.index_bits % 8:
        with pytest.raises(CorruptDataError, match="padding"):
            rec.decode_indices(data[:-1] + bytes([data[-1] | 1]), plan)


# --- build ---------------------------------------------------------------------------------------
def test_build_is_current():
    info = rec.core_info()
    assert info["api_version"] == rec._CORE_API_VERSION
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    assert _core.source_hash == source_hash(csrc)
    assert isinstance(rec.cuda_available(), bool)


@pytest.mark.parametrize("length,k", [(5000, 11), (40000, 6)])
def test_long_blocks_use_row_subtiles(length, k):
    # pool block wider than a 1024 x cols tile budget, and a long private block
    mq, sq, mp, sp = problem(length, 8.0, seed=9)
    plan = BlockPlan(np.array([length], np.int32), np.array([k], np.uint8), 16)
    idx = rec.encode(mq, sq, mp, sp, plan, seed=2, temperature=0.5)
    for tau in (None, 0.0):
        x = _core.debug_scores(mq, sq, mp, sp, plan.lengths, plan.exponents, 16, 2, tau, 0)
        assert int(rec.encode(mq, sq, mp, sp, plan, seed=2, temperature=tau)[0]) == int(np.argmax(x))
    _core.set_kernels("generic")
    try:
        assert np.array_equal(rec.encode(mq, sq, mp, sp, plan, seed=2, temperature=0.5), idx)
    finally:
        _core.set_kernels("auto")
    z = rec.decode(mp, sp, plan, 2, idx)
    cand = _core.debug_candidate(mp, sp, plan.lengths, plan.exponents, 16, 2, 0, int(idx[0]))
    assert np.array_equal(cand.view(np.uint32), z.view(np.uint32))


def test_groups_of_different_widths_in_one_work_item(tmp_path):
    """Regression: two pool groups whose widths round to different tile heights (1728 columns get
    512-row tiles, 2592 get 256) shared one tile buffer sized for the widest group, and the
    narrower group's taller tile overflowed it (heap corruption, seen on a 4608 x 4608 image)."""
    import subprocess
    import sys

    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "import numpy as np\n"
        "from bbimg import rec\n"
        "rng = np.random.default_rng(0)\n"
        "n = 1728 + 2592\n"
        "mq, mp = rng.normal(0, 0.05, n), np.zeros(n)\n"
        "sq, sp = np.full(n, 0.995), np.ones(n)\n"
        "plan = rec.BlockPlan(np.array([1728, 2592]), np.array([16, 16]), 16)\n"
        "for tau in (0.0, 1.0):\n"
        "    idx = rec.encode(mq, sq, mp, sp, plan, 5, temperature=tau, threads=1)\n"
        "    z = rec.decode(mp, sp, plan, 5, idx)\n"
        "    assert np.isfinite(z).all() and z.shape == (n,)\n"
        "print('ok')\n" % str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, (result.returncode, result.stderr[-2000:])
