"""Latent dims the prior already explains: decoded as the prior mean, not coded.

Where the decoder's prior p(y | z) is barely wider than the posterior (sigma_p / sigma_q near 1),
a dim carries a fraction of a bit, and whatever candidate REC sends there is mostly prior noise
of scale sigma_p. The prior mean is a better reconstruction, and it is free. Measured on 4 Kodak
images with model v5 (docs/rec.md section 1c): -2.2% BD-rate.

The decoder cannot know the posterior, so the choice must come from what it has: per channel the
file carries one symbol s, and the ``s / SKIP_STEPS`` fraction of the channel's dims with the
smallest sigma_p are skipped. The encoder picks s from the posterior (the dims with
sigma_p < ``DEFAULT_SKIP_RATIO`` x the channel's median sigma_q).

Format 1.3 sends no per-channel symbol: the threshold is *derived* from what the decoder already
has. The channel's block plan says how many bits it holds (KL_c); with sigma_p known, the posterior
scale sigma that would give that KL if every dim held log2(sigma_p / sigma) bits is the root of a
piecewise-linear equation (:func:`log_thresholds`). The file carries one code per image, an offset
beta on that log scale (the encoder fits it to its sigma_p < 1.25 x median sigma_q rule), and the
dims with ln sigma_p < ln sigma + beta are skipped. Real files, 4 Kodak images x 6 qualities:
-0.3% BD-rate against the per-channel symbols (88 bytes fewer per image at q <= 40, same PSNR).

Robust by construction: skipped dims stay inside their REC blocks (with zero KL and no say in the
candidate choice), so the block structure and the bit stream never depend on the mask. A decoder
whose sigma_p differ by float noise gets a threshold that differs by about as much (1.1: the same
rank cut), so at worst a dim within the noise of the threshold flips, moving that one latent value.
"""
from __future__ import annotations

import os

import numpy as np

from . import CorruptDataError
from . import range_coder as rc

__all__ = ["SKIP_STEPS", "DEFAULT_SKIP_RATIO", "channel_medians", "skip_symbols", "skip_mask", "encode_skip", "decode_skip",
           "SKIP_CODES", "RATIO_CODES", "ratio_code", "kl_estimates", "log_thresholds", "threshold_mask",
           "choose_skip_code"]

#: Latents of at least this many dims solve their thresholds on several threads.
PARALLEL_DIMS = 1 << 20
SKIP_STEPS = 32            # a channel skips s / 32 of its dims, s in 0..32
DEFAULT_SKIP_RATIO = 1.25  # skip dims whose sigma_p is below this multiple of the channel's sigma_q


def by_channel(solve, channels: int, positions: int) -> None:
    """``solve(lo, hi)`` over channel ranges, on threads for large latents: each channel's
    arithmetic is the same either way, and numpy's sorts, partitions and selections release the
    GIL."""
    workers = min(os.cpu_count() or 1, channels, 4) if channels * positions >= PARALLEL_DIMS else 1
    if workers <= 1:
        solve(0, channels)
        return
    from concurrent.futures import ThreadPoolExecutor

    cuts = np.linspace(0, channels, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(solve, cuts[:-1], cuts[1:]))


def channel_medians(sd_q: np.ndarray) -> np.ndarray:
    """np.median of each channel of (channels, positions) ``sd_q``, in its dtype: what
    skip_symbols and choose_skip_code compare against, computed once for both."""
    sd_q = np.asarray(sd_q)
    out = np.empty(sd_q.shape[0], sd_q.dtype)

    def solve(lo: int, hi: int) -> None:
        for c in range(lo, hi):
            out[c] = np.median(sd_q[c])

    by_channel(solve, *sd_q.shape)
    return out


def skip_symbols(sd_q: np.ndarray, sd_p: np.ndarray, ratio: float = DEFAULT_SKIP_RATIO,
                 medians: np.ndarray | None = None) -> np.ndarray:
    """Per channel of (channels, positions) arrays: the symbol s (fraction s / SKIP_STEPS skipped).

    ``ratio`` 0 skips nothing. sigma_q is nearly constant within a channel (std of log sigma_q
    ~0.1 on Kodak), so sigma_p / median(sigma_q) tells which dims the posterior hardly sharpens.
    ``medians``: channel_medians(sd_q), where the caller has them."""
    if ratio <= 0:
        return np.zeros(sd_p.shape[0], np.int32)
    sd_q, sd_p = np.asarray(sd_q), np.asarray(sd_p)
    if medians is None:
        medians = channel_medians(sd_q)
    symbols = np.empty(sd_p.shape[0], np.int32)

    def solve(lo: int, hi: int) -> None:
        for c in range(lo, hi):  # one channel at a time: no (C, P) temporaries on huge images
            limit = np.float32(ratio) * medians[c]
            symbols[c] = int(np.rint(SKIP_STEPS * np.count_nonzero(sd_p[c] < limit) / sd_p.shape[1]))

    by_channel(solve, *sd_p.shape)
    return symbols


def skip_mask(sd_p: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Boolean (channels, positions) mask of the skipped dims: per channel, the
    round(s / SKIP_STEPS * positions) dims with the smallest sigma_p."""
    channels, positions = sd_p.shape
    if symbols.shape != (channels,):
        raise CorruptDataError("skip symbols do not match the latent's channels")
    mask = np.zeros((channels, positions), bool)
    counts = (symbols.astype(np.int64) * positions + SKIP_STEPS // 2) // SKIP_STEPS

    def solve(lo: int, hi: int) -> None:
        for c in range(lo, hi):
            k = int(counts[c])
            if k >= positions:
                mask[c] = True
            elif k > 0:
                mask[c, np.argpartition(sd_p[c], k - 1)[:k]] = True

    by_channel(solve, channels, positions)
    return mask


def encode_skip(symbols: np.ndarray) -> bytes:
    return rc.encode_adaptive(np.asarray(symbols, np.int64), SKIP_STEPS + 1)


def decode_skip(data: bytes, channels: int) -> np.ndarray:
    # The adaptive model has exactly SKIP_STEPS + 1 symbols, so every decoded symbol is in range;
    # malformed bytes raise CorruptDataError inside the range decoder.
    return rc.decode_adaptive(data, channels, SKIP_STEPS + 1).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Format 1.3: thresholds derived from the block plan and sigma_p.

#: Skip code b: 0 skips nothing; b > 0 offsets every channel's log threshold by (b - 128) / 32.
SKIP_CODES = 256
#: Block ratio code r: the encoder's block ratio 2^((r - 64) / 16), so the decoder can turn block
#: counts back into KL.
RATIO_CODES = 128
_LN2 = float(np.log(2.0))


def ratio_code(ratio: float) -> int:
    return int(np.clip(np.rint(16 * np.log2(ratio)) + RATIO_CODES // 2, 0, RATIO_CODES - 1))


def kl_estimates(symbols: np.ndarray, exps: np.ndarray, kappa: int, ratio: int) -> np.ndarray:
    """Per channel, the KL (bits) its plan was made for: ``channel_plan`` gives nb = 2^(s/4) blocks
    for KL ~ kappa nb / block ratio, and a single short block of k bits for KL in (k - 1.5, k - 0.5].
    ``ratio``: the ratio code. Silent channels (0 bits) get 0."""
    s = np.asarray(symbols, np.float64)
    e = np.asarray(exps, np.int64)
    full = kappa * 2.0 ** (s / 4 - (ratio - RATIO_CODES // 2) / 16)
    return np.where(e == 0, 0.0, np.where(e < kappa, np.maximum(e - 1.0, 0.5), full))


def log_thresholds(sd_p: np.ndarray, kl: np.ndarray,
                   previous: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per channel of (channels, positions) ``sd_p``: the ln sigma at which
    sum_j max(0, ln sd_p_j - ln sigma) / ln 2 = kl_c (+inf where kl_c <= 0: skip the channel).

    The sum is continuous and decreasing in ln sigma, so float noise in sd_p moves the root by
    about as much as the noise. Large latents are split over threads by channel (a sort per
    channel, which releases the GIL: 12 MP, 0.34 -> 0.16 s on 2 cores); each channel's arithmetic
    is the same either way. ``previous``: (kl, thresholds) of an earlier call on the same
    ``sd_p``; channels whose kl is the same keep their threshold (the encoder's second plan
    changes few channels' KL)."""
    channels, positions = sd_p.shape
    out = np.full(channels, np.inf)
    todo = np.ones(channels, bool)
    if previous is not None:
        same = np.asarray(previous[0]) == np.asarray(kl)
        out[same] = np.asarray(previous[1])[same]
        todo = ~same
    k = np.arange(1, positions + 1, dtype=np.float64)

    def solve(lo: int, hi: int) -> None:
        for c in range(lo, hi):
            if not (todo[c] and kl[c] > 0):
                continue
            x = sd_p[c]
            if x.dtype == np.float32 and bool((x > 0).all()):
                # Sorting the float32 scales, then the log: the same array as sorting the logs
                # (adjacent float32 values are far apart at double precision, so their logs keep
                # their order), and float32 sorts faster. Contiguous and descending (cumsum over
                # a reversed view runs about 4 times slower).
                a = np.log(np.sort(x)[::-1].astype(np.float64))
            else:
                a = np.sort(np.log(x.astype(np.float64)))[::-1].copy()
            roots = (np.cumsum(a) - kl[c] * _LN2) / k  # root if exactly the k largest exceed it
            below = np.append(a[1:], -np.inf)
            out[c] = roots[np.argmax(roots >= below)]

    by_channel(solve, channels, positions)
    return out


def threshold_mask(sd_p: np.ndarray, log_thr: np.ndarray, code: int) -> np.ndarray:
    """Boolean (channels, positions) mask of the skipped dims: ln sd_p < log_thr + offset."""
    if code == 0:
        return np.zeros(sd_p.shape, bool)
    limit = log_thr + (code - SKIP_CODES // 2) / 32
    mask = np.empty(sd_p.shape, bool)
    for c in range(sd_p.shape[0]):
        mask[c] = np.log(sd_p[c].astype(np.float64)) < limit[c]
    return mask


def choose_skip_code(sd_q: np.ndarray, log_thr: np.ndarray, ratio: float = DEFAULT_SKIP_RATIO,
                     medians: np.ndarray | None = None) -> int:
    """The code whose offset best matches the rule sigma_p < ``ratio`` x median sigma_q over the
    channels that have a threshold (0 for ``ratio`` 0: skip nothing). ``medians``:
    channel_medians(sd_q), where the caller has them."""
    if ratio <= 0:
        return 0
    ok = np.isfinite(log_thr)
    if not ok.any():
        return SKIP_CODES // 2
    if medians is None:
        medians = channel_medians(sd_q)
    target = np.log(ratio) + np.log(np.asarray(medians)[ok].astype(np.float64))
    beta = float(np.median(target - log_thr[ok]))
    return int(np.clip(np.rint(32 * beta) + SKIP_CODES // 2, 1, SKIP_CODES - 1))
