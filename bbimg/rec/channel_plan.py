"""Block plans that cost a few bits per channel instead of several bits per block.

Latents come as (channels, positions). Positions are visited in a seeded pseudo-random order
shared by encoder and decoder, and each channel is cut into ``nb`` equal runs of that order. A run
gathers positions from all over the image, so its KL concentrates near the channel's average and
``nb = KL_c / kappa`` blocks of 2^kappa candidates fit the channel's KL without per-block side
information. The file carries, per channel, ``nb`` on a quarter-octave log scale and the index bits
per block, range-coded: a few hundred bytes per image in all.
"""
from __future__ import annotations

import numpy as np

from . import MAX_BLOCK_LEN, BlockPlan, CorruptDataError
from . import range_coder as rc

__all__ = ["DEFAULT_BLOCK_RATIO", "position_order", "blocks_per_channel", "channel_plan", "plan_from_channels",
           "encode_channel_plan", "decode_channel_plan"]

_OCTAVE_STEPS = 4          # block counts are coded on a log scale: nb = round(2 ** (s / 4))
_NB_ALPHABET = 96          # up to 2**23.75 blocks per channel
DEFAULT_BLOCK_RATIO = 1.1  # blocks per channel = ratio * KL_c / kappa (docs/rec.md section 5)


def position_order(positions: int, seed: int) -> np.ndarray:
    """A seeded permutation of the latent positions, shared by encoder and decoder (integer-only).

    Blocks are runs of this order, so each block gathers positions from all over the image and
    their KL sums concentrate near the per-channel average: uniform blocks then fit kappa well,
    and the plan costs a few bits per channel instead of several bits per block."""
    x = np.arange(positions, dtype=np.uint64) + np.uint64(seed & 0xFFFF_FFFF_FFFF_FFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return np.argsort(x, kind="stable")


def blocks_per_channel(symbol: np.ndarray, positions: int) -> np.ndarray:
    """Blocks per channel from the coded symbols; at least enough that no block is longer than the
    engine allows (channels of more than 2^16 positions: images above 4096 x 4096)."""
    nb = np.round(2.0 ** (symbol.astype(np.float64) / _OCTAVE_STEPS)).astype(np.int64)
    return np.clip(nb, -(-positions // MAX_BLOCK_LEN), positions)


def channel_plan(kl: np.ndarray, kappa: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the block-count symbol and the index bits per block, from the channel's KL."""
    kl_c = kl.sum(axis=1)
    target = ratio * kl_c / kappa
    symbols = np.clip(np.round(_OCTAVE_STEPS * np.log2(np.maximum(target, 1.0))), 0, _NB_ALPHABET - 1)
    symbols = symbols.astype(np.int32)
    # Channels too poor for one full block get one block with just enough candidates (0 bits:
    # the decoder takes a fixed prior sample).
    exps = np.where(target < 1.0, np.clip(np.ceil(kl_c + 0.5), 0, kappa), kappa).astype(np.int32)
    exps = np.where(kl_c < 0.5, 0, exps).astype(np.int32)
    return symbols, exps


def plan_from_channels(symbols: np.ndarray, exps: np.ndarray, positions: int, kappa: int) -> BlockPlan:
    lengths, exponents = [], []
    for nb, k in zip(blocks_per_channel(symbols, positions), exps):
        base, extra = divmod(positions, int(nb))
        lengths.append(np.full(int(nb), base, np.int64) + (np.arange(int(nb)) < extra))
        exponents.append(np.full(int(nb), k, np.int64))
    return BlockPlan(np.concatenate(lengths), np.concatenate(exponents), kappa)


def encode_channel_plan(symbols: np.ndarray, exps: np.ndarray, kappa: int) -> bytes:
    return rc.encode_adaptive(np.concatenate([symbols, exps]), max(_NB_ALPHABET, kappa + 1))


def decode_channel_plan(data: bytes, channels: int, kappa: int) -> tuple[np.ndarray, np.ndarray]:
    both = rc.decode_adaptive(data, 2 * channels, max(_NB_ALPHABET, kappa + 1))
    symbols, exps = both[:channels], both[channels:]
    if (symbols >= _NB_ALPHABET).any() or (exps > kappa).any():
        raise CorruptDataError("block plan out of range")
    return symbols, exps
