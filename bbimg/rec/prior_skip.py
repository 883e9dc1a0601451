"""Latent dims the prior already explains: decoded as the prior mean, not coded.

Where the decoder's prior p(y | z) is barely wider than the posterior (sigma_p / sigma_q near 1),
a dim carries a fraction of a bit, and whatever candidate REC sends there is mostly prior noise
of scale sigma_p. The prior mean is a better reconstruction, and it is free. Measured on 4 Kodak
images with model v5 (docs/rec.md section 1c): -2.2% BD-rate.

The decoder cannot know the posterior, so the choice must come from what it has: per channel the
file carries one symbol s, and the ``s / SKIP_STEPS`` fraction of the channel's dims with the
smallest sigma_p are skipped. The encoder picks s from the posterior (the dims with
sigma_p < ``DEFAULT_SKIP_RATIO`` x the channel's median sigma_q).

Robust by construction: the mask is a rank cut, so a decoder whose sigma_p differ by float noise
can at worst swap which of two nearly equal dims is skipped. Skipped dims stay inside their REC
blocks (with zero KL and no say in the candidate choice), so the block structure and the bit
stream never depend on the mask; a swapped dim only moves that one latent value.
"""
from __future__ import annotations

import numpy as np

from . import CorruptDataError
from . import range_coder as rc

__all__ = ["SKIP_STEPS", "DEFAULT_SKIP_RATIO", "skip_symbols", "skip_mask", "encode_skip", "decode_skip"]

SKIP_STEPS = 32            # a channel skips s / 32 of its dims, s in 0..32
DEFAULT_SKIP_RATIO = 1.25  # skip dims whose sigma_p is below this multiple of the channel's sigma_q


def skip_symbols(sd_q: np.ndarray, sd_p: np.ndarray, ratio: float = DEFAULT_SKIP_RATIO) -> np.ndarray:
    """Per channel of (channels, positions) arrays: the symbol s (fraction s / SKIP_STEPS skipped).

    ``ratio`` 0 skips nothing. sigma_q is nearly constant within a channel (std of log sigma_q
    ~0.1 on Kodak), so sigma_p / median(sigma_q) tells which dims the posterior hardly sharpens."""
    if ratio <= 0:
        return np.zeros(sd_p.shape[0], np.int32)
    sd_q, sd_p = np.asarray(sd_q), np.asarray(sd_p)
    symbols = np.empty(sd_p.shape[0], np.int32)
    for c in range(sd_p.shape[0]):  # one channel at a time: no (C, P) temporaries on huge images
        limit = np.float32(ratio) * np.median(sd_q[c])
        symbols[c] = int(np.rint(SKIP_STEPS * np.count_nonzero(sd_p[c] < limit) / sd_p.shape[1]))
    return symbols


def skip_mask(sd_p: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Boolean (channels, positions) mask of the skipped dims: per channel, the
    round(s / SKIP_STEPS * positions) dims with the smallest sigma_p."""
    channels, positions = sd_p.shape
    if symbols.shape != (channels,):
        raise CorruptDataError("skip symbols do not match the latent's channels")
    mask = np.zeros((channels, positions), bool)
    counts = (symbols.astype(np.int64) * positions + SKIP_STEPS // 2) // SKIP_STEPS
    for c in np.flatnonzero(counts):
        k = int(counts[c])
        if k >= positions:
            mask[c] = True
        else:
            mask[c, np.argpartition(sd_p[c], k - 1)[:k]] = True
    return mask


def encode_skip(symbols: np.ndarray) -> bytes:
    return rc.encode_adaptive(np.asarray(symbols, np.int64), SKIP_STEPS + 1)


def decode_skip(data: bytes, channels: int) -> np.ndarray:
    # The adaptive model has exactly SKIP_STEPS + 1 symbols, so every decoded symbol is in range;
    # malformed bytes raise CorruptDataError inside the range decoder.
    return rc.decode_adaptive(data, channels, SKIP_STEPS + 1).astype(np.int32)
