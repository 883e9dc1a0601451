"""Pure-NumPy reference of the REC engine (slow; for tests and benchmarks only).

Philox4x32-10, the deterministic normals, block permutations/signs and decoding are
bit-identical to the C++ engine (numpy float32 operations are IEEE operations and numpy never
fuses them). Encoding follows the same algorithm but scores candidates in float64 through
numpy matmul and selects over all candidates at once, so it may pick a different index at
near-ties; it is the yardstick of ``bench/rec_bench.py`` and of the statistical tests.
"""
from __future__ import annotations

import numpy as np

from bbimg.rec import REC_NEAREST_SHIFT, BlockPlan

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = np.uint64(0xFFFFFFFF)
TAG_POOL, TAG_PRIVATE, TAG_PERM, TAG_CHUNK_PICK, TAG_BLOCK_PICK = 0, 1, 2, 3, 4
POOL_MIN_BITS = 10
CHUNK = 1 << POOL_MIN_BITS

f32 = np.float32
# Same constants as csrc/detmath.h (float32 values of the same decimal literals).
TWO_M24 = f32(5.9604644775390625e-08)
SQRT2 = f32(1.41421353816986083984375)
LN2 = f32(0.693147182464599609375)
L9, L7, L5, L3 = f32(0.111111111), f32(0.142857143), f32(0.2), f32(0.333333333)
PI4_2M21 = f32(3.74507028e-07)
S3, S5, S7, S9 = f32(-0.166666667), f32(0.00833333333), f32(-0.000198412698), f32(2.75573192e-06)
C2, C4, C6, C8, C10 = (f32(-0.5), f32(0.0416666667), f32(-0.00138888889), f32(2.48015873e-05),
                       f32(-2.75573192e-07))


def philox(seed: int, c0, c1, c2, c3):
    """Philox4x32-10 with key = (seed low, seed high) on broadcast uint32 counter arrays."""
    c0, c1, c2, c3 = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) & MASK for c in (c0, c1, c2, c3)))
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0 = c0 * M0
        p1 = c2 * M1
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & MASK, \
            (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & MASK
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def _neg2log(w: np.ndarray) -> np.ndarray:
    k = (w >> np.uint32(9)).astype(np.uint32)
    u = (np.uint32(2) * k + np.uint32(1)).astype(f32) * TWO_M24
    bits = u.view(np.uint32)
    e = (bits >> np.uint32(23)).astype(np.int32) - np.int32(127)
    m = ((bits & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000)).view(f32)
    big = m > SQRT2
    m = np.where(big, m * f32(0.5), m)
    e = e + big.astype(np.int32)
    s = (m - f32(1)) / (m + f32(1))
    s2 = s * s
    p = L9
    for c in (L7, L5, L3, f32(1)):
        p = p * s2 + c
    lnm = (f32(2) * s) * p
    lnu = e.astype(f32) * LN2 + lnm
    r2 = f32(-2) * lnu
    return np.where(r2 > 0, r2, f32(0)).astype(f32)


def _sincos(w: np.ndarray):
    oct_ = w >> np.uint32(29)
    t = (w >> np.uint32(8)) & np.uint32(0x001FFFFF)
    odd = (oct_ & np.uint32(1)) == 1
    t = np.where(odd, np.uint32(0x00200000) - t, t)
    phi = t.astype(f32) * PI4_2M21
    p2 = phi * phi
    sp = S9
    for c in (S7, S5, S3, f32(1)):
        sp = sp * p2 + c
    sphi = phi * sp
    cp = C10
    for c in (C8, C6, C4, C2, f32(1)):
        cp = cp * p2 + c
    cphi = cp
    sa = np.where(odd, cphi, sphi)
    ca = np.where(odd, sphi, cphi)
    q = oct_ >> np.uint32(1)
    c = np.select([q == 0, q == 1, q == 2], [ca, -sa, -ca], sa)
    s = np.select([q == 0, q == 1, q == 2], [sa, ca, -sa], -ca)
    return s.astype(f32), c.astype(f32)


def normal4(w0, w1, w2, w3):
    """Box-Muller on Philox words, exactly as det_normal4 in csrc/detmath.h."""
    r0 = np.sqrt(_neg2log(w0))
    s, c = _sincos(w1)
    z0, z1 = r0 * c, r0 * s
    r1 = np.sqrt(_neg2log(w2))
    s, c = _sincos(w3)
    return z0, z1, r1 * c, r1 * s


def pool_normals(seed: int, n0: int, rows: int, cols: int) -> np.ndarray:
    """E(seed, n, col) for n in [n0, n0 + rows), col < cols: float32 [rows, cols]."""
    g = (cols + 3) // 4
    n = np.arange(n0, n0 + rows, dtype=np.uint64)[:, None]
    gg = np.arange(g, dtype=np.uint64)[None, :]
    z = normal4(*philox(seed, gg, n, 0, TAG_POOL))
    return np.stack(z, axis=-1).reshape(rows, 4 * g)[:, :cols]


def private_normals(seed: int, b: int, rows: int, cols: int, n0: int = 0) -> np.ndarray:
    g = (cols + 3) // 4
    n = np.arange(n0, n0 + rows, dtype=np.uint64)[:, None]
    gg = np.arange(g, dtype=np.uint64)[None, :]
    z = normal4(*philox(seed, gg | (n << np.uint64(16)), b & 0xFFFFFFFF, b >> 32, TAG_PRIVATE))
    return np.stack(z, axis=-1).reshape(rows, 4 * g)[:, :cols]


def block_perm_signs(seed: int, b: int, length: int):
    """Pool column of each dim of block b (Fisher-Yates) and its sign."""
    i = np.arange(length, dtype=np.uint64)
    w0, w1, _, _ = philox(seed, i, b & 0xFFFFFFFF, b >> 32, TAG_PERM)
    sign = np.where(w1 & np.uint32(1), f32(-1), f32(1))
    perm = np.arange(length)
    for k in range(length - 1, 0, -1):
        j = (int(w0[k]) * (k + 1)) >> 32
        perm[k], perm[j] = perm[j], perm[k]
    return perm, sign


def u01(w0, w1) -> np.ndarray:
    m = ((np.asarray(w0, np.uint64) >> np.uint64(6)) << np.uint64(27)) | (np.asarray(w1, np.uint64) >> np.uint64(5))
    return m.astype(np.float64) * 2.0 ** -53


def candidates(mu_p, sigma_p, plan: BlockPlan, seed: int, b: int, rows: np.ndarray | None = None) -> np.ndarray:
    """All (or the given) candidates z of block b: float32 [rows, len_b], bit-exact."""
    start = int(plan.starts[b])
    L, k = int(plan.lengths[b]), int(plan.exponents[b])
    n = np.arange(1 << k) if rows is None else np.asarray(rows)
    if k >= POOL_MIN_BITS:
        E = np.concatenate([pool_normals(seed, int(r), 1, L) for r in n]) if rows is not None \
            else pool_normals(seed, 0, 1 << k, L)
    else:
        E = np.concatenate([private_normals(seed, b, 1, L, int(r)) for r in n]) if rows is not None \
            else private_normals(seed, b, 1 << k, L)
    perm, sign = block_perm_signs(seed, b, L)
    eps = E[:, perm] * sign[None, :]
    mp = np.asarray(mu_p, f32)[start:start + L]
    sp = np.asarray(sigma_p, f32)[start:start + L]
    return (mp[None, :] + sp[None, :] * eps).astype(f32)


def decode(mu_p, sigma_p, plan: BlockPlan, seed: int, indices) -> np.ndarray:
    out = np.empty(plan.n_dims, f32)
    for b, s in enumerate(plan.starts):
        out[s:s + plan.lengths[b]] = candidates(mu_p, sigma_p, plan, seed, b, rows=[int(indices[b])])[0]
    return out


NEAREST_WEIGHT_POWER = 0.8  # REC_NEAREST_WEIGHT_POWER in csrc/rec.h


def nearest_target(mq, sq, mp, sp, shift: float = REC_NEAREST_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """(target t, weight w) of the "nearest" rule, float64: score = -0.5 sum w (z - t)^2.

    ``shift`` is the engine's constant unless a measurement asks what another value does."""
    r2 = (sp / sq) ** 2
    w = (np.maximum(r2 - 1.0, 1e-8) / sp**2) ** NEAREST_WEIGHT_POWER
    return mq + shift * (mq - mp) / np.maximum(r2, 1.0), w


def log_weights(mu_q, sigma_q, mu_p, sigma_p, z: np.ndarray, start: int,
                temperature: float | None = None) -> np.ndarray:
    """Selection score up to a constant (float64) of candidates z [N, L] of dims [start, start+L).

    temperature None ("nearest"): -0.5 sum w (z - t)^2; tau: log(q) / tau - log(p), where
    tau = 0 means no 1/tau scaling and no -log p term (the argmax is what matters).
    """
    L = z.shape[1]
    sl = slice(start, start + L)
    mq, sq, mp, sp = (np.asarray(a, np.float64)[sl] for a in (mu_q, sigma_q, mu_p, sigma_p))
    z = z.astype(np.float64)
    if temperature is None:
        t, w = nearest_target(mq, sq, mp, sp)
        return -0.5 * (w * (z - t) ** 2).sum(axis=1)
    lq = (-0.5 * ((z - mq) / sq) ** 2).sum(axis=1)
    lp = (-0.5 * ((z - mp) / sp) ** 2).sum(axis=1)
    inv = 1.0 / temperature if temperature > 0 else 1.0
    return lq * inv - (lp if temperature > 0 else 0.0)


def encode(mu_q, sigma_q, mu_p, sigma_p, plan: BlockPlan, seed: int, *, temperature: float | None = None,
           blocks=None, group: int = 256, shift: float = REC_NEAREST_SHIFT) -> np.ndarray:
    """Vectorised reference encoder over ``blocks`` (default all): indices (int64, -1 elsewhere).

    Shared-pool candidates, float64 scores a*E^2 + c*E by matmul on groups of blocks of equal
    k sorted by length (zero padding), then argmax (nearest rule, tau = 0) or inverse-CDF
    sampling of the tempered weights (see bbimg.rec.encode) with the block's Philox uniform
    (tau > 0). ``shift``: the nearest rule's target shift (the engine's constant by default).
    """
    mq, sq, mp, sp = (np.asarray(a, np.float64) for a in (mu_q, sigma_q, mu_p, sigma_p))
    starts = plan.starts
    blocks = np.arange(plan.n_blocks) if blocks is None else np.asarray(blocks)
    out = np.full(plan.n_blocks, -1, np.int64)
    nearest = temperature is None
    tau = 0.0 if nearest else float(temperature)
    # per-block weights in pool-column order
    A, C = {}, {}
    for b in blocks:
        b = int(b)
        s, L = int(starts[b]), int(plan.lengths[b])
        perm, sign = block_perm_signs(seed, b, L)
        r = sp[s:s + L] / sq[s:s + L]
        if nearest:  # -0.5 w (sigma_p eps - (t - mu_p))^2, expanded in eps
            t, w = nearest_target(mq[s:s + L], sq[s:s + L], mp[s:s + L], sp[s:s + L], shift)
            a = -0.5 * w * sp[s:s + L] ** 2
            c = w * sp[s:s + L] * (t - mp[s:s + L]) * sign
        else:
            inv = 1.0 / tau if tau > 0 else 1.0
            a = (0.5 if tau > 0 else 0.0) - 0.5 * inv * r * r
            c = r * (mq[s:s + L] - mp[s:s + L]) / sq[s:s + L] * sign * inv
        A[b] = np.zeros(L)
        C[b] = np.zeros(L)
        A[b][perm] = a
        C[b][perm] = c
    ks = plan.exponents.astype(np.int64)

    def select(b, x):
        if tau == 0.0:
            return int(np.argmax(x))
        y = x - x.max()
        w = np.exp(y)
        cdf = np.cumsum(w)
        u = u01(*philox(seed, 0, b & 0xFFFFFFFF, b >> 32, TAG_BLOCK_PICK)[:2])
        return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(w) - 1))

    pool_b = [int(b) for b in blocks if ks[b] >= POOL_MIN_BITS]
    for b in (int(b) for b in blocks if 0 < ks[b] < POOL_MIN_BITS):
        L = int(plan.lengths[b])
        E = private_normals(seed, b, 1 << int(ks[b]), L).astype(np.float64)
        out[b] = select(b, (E * E) @ A[b] + E @ C[b])
    for b in (int(b) for b in blocks if ks[b] == 0):
        out[b] = 0
    for k in sorted({int(ks[b]) for b in pool_b}):
        bl = sorted((b for b in pool_b if ks[b] == k), key=lambda b: plan.lengths[b])
        N = 1 << k
        for g0 in range(0, len(bl), group):
            gb = bl[g0:g0 + group]
            P = int(max(plan.lengths[b] for b in gb))
            WA = np.zeros((P, len(gb)))
            WC = np.zeros((P, len(gb)))
            for j, b in enumerate(gb):
                WA[: len(A[b]), j] = A[b]
                WC[: len(C[b]), j] = C[b]
            scores = np.empty((N, len(gb)))
            for n0 in range(0, N, 4096):
                rows = min(4096, N - n0)
                E = pool_normals(seed, n0, rows, P).astype(np.float64)
                scores[n0:n0 + rows] = (E * E) @ WA + E @ WC
            for j, b in enumerate(gb):
                out[b] = select(b, scores[:, j])
    return out
