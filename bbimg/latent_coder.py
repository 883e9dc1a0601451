"""REC coding of one latent level (z or y): posterior and prior in, file sections out, and back.

A level is stored as its block plan (section ``xPLN``: per-channel block counts, so the decoder
cuts the same blocks), the candidate indices (``xIDX``) and, for y, the skip symbols (``YSKP``:
dims whose prior already explains them are decoded as the prior mean and cost nothing). Positions
are visited in a seeded permutation so that each block mixes the image's regions. Decoding needs
only the prior, which both sides compute, and these sections: no entropy-coding table is built
from floating-point network outputs, so small numerical differences between machines move decoded
pixels slightly but never desynchronise the bit stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import format as bbi
from . import rec
from . import tiling
from .rec import prior_skip
from .rec.channel_plan import (DEFAULT_BLOCK_RATIO, channel_plan, decode_channel_plan, encode_channel_plan,
                                plan_from_channels, position_order)

__all__ = ["Gaussian", "Level", "Z_LEVEL", "Y_LEVEL", "CodedLatent", "LatentCoder", "CandidateChoice", "read_plan",
           "Z_BLOCK_RATIO_GAIN"]

#: The hyper-latent z gets this many times the block ratio of y: a closer z gives a sharper prior
#: p(y | z), which saves more y bits than the extra z bits cost (8 Kodak images: -1.3% BD-rate
#: at 1.3 / 1.1 against 1; docs/rec.md section 1c).
Z_BLOCK_RATIO_GAIN = 1.3 / 1.1


class Gaussian:
    """Per-dim Gaussian parameters, each (1, C, H, W) float32.

    :meth:`release` hands the arrays over: a y latent of an 8192 x 8192 image is ~170 MB per
    array, and the coder frees each as soon as it has its own reordered copy, which it can only
    do if nobody else still holds them."""

    __slots__ = ("mean", "scale")

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean, self.scale = mean, scale

    def release(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale); this object holds nothing afterwards."""
        if self.mean is None:
            raise RuntimeError("Gaussian already released")
        mean, scale = self.mean, self.scale
        self.mean = self.scale = None
        return mean, scale


@dataclass(frozen=True)
class Level:
    """What tells the two latent levels apart in a file."""

    tag: str            # section prefix: "Z" -> ZPLN, ZIDX
    seed_salt: int      # mixed into the file's seed: the levels draw different candidates
    skips: bool         # has a skip section (y only)

    def seed(self, file_seed: int) -> int:
        return (file_seed * 0x9E3779B97F4A7C15 + self.seed_salt) & 0xFFFF_FFFF_FFFF_FFFF


Z_LEVEL = Level("Z", 0x5A5A_0001, skips=False)
Y_LEVEL = Level("Y", 0x5959_0002, skips=True)


@dataclass
class CodedLatent:
    sections: list            # bbi.Section: plan, indices (and skip symbols for y)
    sample: np.ndarray | None  # the latent exactly as the decoder rebuilds it (None when size_only)
    kl_bits: float            # KL(q || p): the ideal rate
    index_bits: int           # bits of candidate indices
    side_bits: int            # bits of the block plan and skip symbols
    blocks: int


def _ordered(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(1, C, H, W) array -> float32 (C * H * W,) in channel-major, permuted-position order."""
    arr = np.asarray(a, dtype=np.float32)
    arr = arr.reshape(arr.shape[1], -1)
    return np.ascontiguousarray(arr[:, order]).reshape(-1)


def _unordered(flat: np.ndarray, order: np.ndarray, shape) -> np.ndarray:
    channels = shape[1]
    out = np.empty((channels, order.size), np.float32)
    out[:, order] = flat.reshape(channels, -1)
    return out.reshape(shape)


#: The "nearest" rule's weight power, csrc/rec.h REC_NEAREST_WEIGHT_POWER (a test checks that
#: CandidateChoice.pick reproduces the engine's pick with it).
_NEAREST_WEIGHT_POWER = 0.8


class CandidateChoice:
    """One level's candidate choice, open to a search that scores candidates by something the
    engine does not see (the decoded image): the plan is fixed, so every choice costs the same.

    The engine's "nearest" rule picks, per block, the candidate z minimising
    sum w (z - t)^2 for a target t and weights w that it derives from q and p. :meth:`pick` runs
    the engine with any other (t, w) by handing it the posterior that derives exactly those:
    a quadratic model of any per-dim score becomes an engine call. Arrays are (1, C, H, W)."""

    def __init__(self, coder: "LatentCoder", mu_q, sd_q, mu_p, sd_p, mask, plan, order, shape):
        self._coder, self._plan, self._order, self.shape = coder, plan, order, shape
        self._mu_q, self._sd_q, self._mu_p, self._sd_p, self._mask = mu_q, sd_q, mu_p, sd_p, mask
        self.n_blocks = plan.n_blocks

    def latent(self, indices: np.ndarray) -> np.ndarray:
        """The latent the decoder rebuilds from ``indices``."""
        flat = rec.decode(self._mu_p, self._sd_p, self._plan, self._coder.seed, indices, device=self._coder.device)
        if self._mask is not None:
            np.copyto(flat, self._mu_p, where=self._mask)
        return _unordered(flat, self._order, self.shape)

    def skipped(self) -> np.ndarray:
        """Boolean mask of the dims decoded as the prior mean whatever the pick."""
        if self._mask is None:
            return np.zeros(self.shape, bool)
        return _unordered(self._mask.astype(np.float32), self._order, self.shape) > 0.5

    def nearest_target(self) -> tuple[np.ndarray, np.ndarray]:
        """(t, w) of the engine's own rule."""
        t, w = self._target(self._mu_q, self._sd_q)
        return _unordered(t, self._order, self.shape), _unordered(w, self._order, self.shape)

    def _target(self, mu_q, sd_q):
        r2 = (self._sd_p / sd_q) ** 2
        t = mu_q + rec.REC_NEAREST_SHIFT * (mu_q - self._mu_p) / np.maximum(r2, 1)
        w = np.maximum(1 / sd_q**2 - 1 / self._sd_p**2, 0) ** _NEAREST_WEIGHT_POWER
        return t.astype(np.float32), w.astype(np.float32)

    def pick(self, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Indices of the candidates nearest ``target`` in the metric sum ``weight`` (z - t)^2
        (weight > 0 where it matters; skipped dims keep no say)."""
        t, w = _ordered(target, self._order).astype(np.float64), _ordered(weight, self._order).astype(np.float64)
        mu_p, sd_p = self._mu_p.astype(np.float64), self._sd_p.astype(np.float64)
        sd_q = 1 / np.sqrt(np.maximum(w, 0) ** (1 / _NEAREST_WEIGHT_POWER) + 1 / sd_p**2)
        m = np.maximum((sd_p / sd_q) ** 2, 1)
        shift = rec.REC_NEAREST_SHIFT
        mu_q = (t + shift * mu_p / m) / (1 + shift / m)
        mu_q, sd_q = mu_q.astype(np.float32), np.minimum(sd_q, sd_p).astype(np.float32)
        if self._mask is not None:
            np.copyto(mu_q, self._mu_p, where=self._mask)
            np.copyto(sd_q, self._sd_p, where=self._mask)
        return rec.encode(mu_q, sd_q, self._mu_p, self._sd_p, self._plan, self._coder.seed, device=self._coder.device)


def read_plan(plan_bytes: bytes, channels: int, positions: int, kappa: int) -> rec.BlockPlan:
    """A level's block plan from its section (ValueError when malformed)."""
    symbols, exps = decode_channel_plan(plan_bytes, channels, kappa)
    return plan_from_channels(symbols, exps, positions, kappa)


class LatentCoder:
    """The REC coder of one level of one file: ``compress`` on the encoder, ``decompress`` on the
    decoder, with the same level, file seed and kappa.

    ``block_ratio``: block size against the level's KL (channel_plan); ``skip_ratio``: the prior
    skip rule's threshold (y only; None codes every dim); ``temperature``: None picks each block's
    candidate by the "nearest" rule, a number tau samples it in proportion to q^(1/tau)/p."""

    def __init__(self, level: Level, file_seed: int, kappa: int, *, block_ratio: float = DEFAULT_BLOCK_RATIO,
                 skip_ratio: float | None = None, temperature: float | None = None, device: str = "cpu"):
        if skip_ratio is not None and not level.skips:
            raise ValueError(f"level {level.tag} has no skip symbols")
        self.level, self.seed, self.kappa = level, level.seed(file_seed), kappa
        self.block_ratio, self.skip_ratio = block_ratio, skip_ratio
        self.temperature, self.device = temperature, device

    def _tag(self, part: str) -> str:
        return self.level.tag + part

    def compress(self, posterior: Gaussian, prior: Gaussian, *, size_only: bool = False,
                 choose: "Callable[[CandidateChoice, np.ndarray], np.ndarray] | None" = None) -> CodedLatent:
        """Code a sample of ``posterior`` against ``prior``. Both are released (their arrays freed
        as soon as they are reordered for the engine).

        ``size_only`` skips the candidate search: the index stream's length is known from the plan
        alone (zero bytes of the right length stand in, and no sample is returned).
        ``choose(problem, indices) -> indices``: a second look at the engine's pick (the plan, and
        so the file size, is fixed by then; see :class:`CandidateChoice`)."""
        shape = tuple(posterior.mean.shape)
        order = position_order(shape[2] * shape[3], self.seed)
        mu_q, sd_q = (_ordered(a, order) for a in posterior.release())
        mu_p, sd_p = (_ordered(a, order) for a in prior.release())
        channels, positions = shape[1], order.size
        sections = []
        mask = None
        skip_bytes = b""
        if self.skip_ratio is not None:
            symbols = prior_skip.skip_symbols(sd_q.reshape(channels, positions), sd_p.reshape(channels, positions),
                                              self.skip_ratio)
            mask = prior_skip.skip_mask(sd_p.reshape(channels, positions), symbols).reshape(-1)
            skip_bytes = prior_skip.encode_skip(symbols)
            np.copyto(mu_q, mu_p, where=mask)  # zero KL and no say in the candidate choice
            np.copyto(sd_q, sd_p, where=mask)
        kl = tiling.kl_bits(mu_q, sd_q, mu_p, sd_p)  # in bounded-memory chunks
        kl_total, kl_channels = float(kl.sum()), kl.reshape(channels, positions).sum(axis=1, keepdims=True)
        del kl  # the plan needs only the per-channel sums
        symbols, exps = channel_plan(kl_channels, self.kappa, self.block_ratio)
        plan = plan_from_channels(symbols, exps, positions, self.kappa)
        plan_bytes = encode_channel_plan(symbols, exps, self.kappa)
        sample = None
        if size_only:
            index_bytes = bytes((plan.index_bits + 7) // 8)
        else:
            indices = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, self.seed, temperature=self.temperature,
                                 device=self.device)
            if choose is not None:
                indices = choose(CandidateChoice(self, mu_q, sd_q, mu_p, sd_p, mask, plan, order, shape), indices)
            del mu_q, sd_q
            flat = rec.decode(mu_p, sd_p, plan, self.seed, indices, device=self.device)
            if mask is not None:
                np.copyto(flat, mu_p, where=mask)
            sample = _unordered(flat, order, shape)
            index_bytes = rec.encode_indices(indices, plan)
        sections = [bbi.Section(self._tag("PLN"), plan_bytes), bbi.Section(self._tag("IDX"), index_bytes)]
        if self.skip_ratio is not None:
            sections.append(bbi.Section(self._tag("SKP"), skip_bytes))
        return CodedLatent(sections, sample, kl_total, plan.index_bits, 8 * (len(plan_bytes) + len(skip_bytes)),
                           plan.n_blocks)

    def decompress(self, prior: Gaussian, container: "bbi.Container") -> np.ndarray:
        """The latent the encoder sent, from ``prior`` (released) and the level's sections of
        ``container``. A y level without skip symbols (format 1.0 files) skips nothing.
        Raises BbiError for malformed sections."""
        shape = tuple(prior.mean.shape)
        order = position_order(shape[2] * shape[3], self.seed)
        mu_p, sd_p = (_ordered(a, order) for a in prior.release())
        skip = container.section(self._tag("SKP")) if self.level.skips else None
        try:
            plan = read_plan(container.section(self._tag("PLN")), shape[1], order.size, self.kappa)
            indices = rec.decode_indices(container.section(self._tag("IDX")), plan)
            sample = rec.decode(mu_p, sd_p, plan, self.seed, indices, device=self.device)
            if skip is not None:
                channels = shape[1]
                symbols = prior_skip.decode_skip(skip, channels)
                mask = prior_skip.skip_mask(sd_p.reshape(channels, -1), symbols).reshape(-1)
                np.copyto(sample, mu_p, where=mask)
        except ValueError as exc:
            raise bbi.BbiError(f"corrupt file: {exc}") from exc
        return _unordered(sample, order, shape)
