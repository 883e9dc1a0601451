"""REC coding of one latent level (z or y): posterior and prior in, file sections out, and back.

A level is stored as its block plan (section ``xPL2``: one unit per channel, so the decoder cuts
the same blocks; for y also the skip code, which with the plan and the prior says which dims are
decoded as the prior mean and cost nothing) and the candidate indices (``xIDX``). Files of format
1.0-1.2 carry ``xPLN`` and ``YSKP`` instead; both are read. Positions are visited in a seeded
permutation so that each block mixes the image's regions. Decoding needs only the prior, which
both sides compute, and these sections: the block structure and every entropy-coding model come
from the sections and integer tables alone, never from floating-point network outputs, so small
numerical differences between machines move decoded values slightly (the skip mask may differ in
a dim at its threshold) but never desynchronise the bit stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import format as bbi
from . import rec
from . import tiling
from .rec import prior_skip
from .rec.channel_plan import (DEFAULT_BLOCK_RATIO, UnitPrediction, channel_plan, decode_channel_plan,
                                encode_channel_plan, plan_from_channels, plan_units, position_order, read_units,
                                units_plan, write_units)
from .threads import available

__all__ = ["Gaussian", "Level", "Z_LEVEL", "Y_LEVEL", "CodedLatent", "LatentCoder", "CandidateChoice", "read_plan",
           "read_level_plan", "plan_tags", "latent_sections", "Z_BLOCK_RATIO_GAIN"]

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

    tag: str            # section prefix: "Z" -> ZPL2 (ZPLN before 1.3), ZIDX
    seed_salt: int      # mixed into the file's seed: the levels draw different candidates
    skips: bool         # has skip information (y only)

    def seed(self, file_seed: int) -> int:
        return (file_seed * 0x9E3779B97F4A7C15 + self.seed_salt) & 0xFFFF_FFFF_FFFF_FFFF


Z_LEVEL = Level("Z", 0x5A5A_0001, skips=False)
Y_LEVEL = Level("Y", 0x5959_0002, skips=True)


@dataclass
class CodedLatent:
    sections: list            # bbi.Section: plan (with the skip code for y), indices
    sample: np.ndarray | None  # the latent exactly as the decoder rebuilds it (None when size_only or not wanted)
    kl_bits: float            # KL(q || p): the ideal rate
    index_bits: int           # bits of candidate indices
    side_bits: int            # bits of the block plan and skip code
    blocks: int


def _kept_sum(kl: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel KL sums of the dims not in ``mask`` ((C, P) each): (C, 1). One channel at a
    time (no (C, P) float64 temporary on huge images), on threads for large latents."""
    mask = mask.reshape(kl.shape)
    out = np.empty((kl.shape[0], 1))

    def solve(lo: int, hi: int) -> None:
        for c in range(lo, hi):
            out[c, 0] = kl[c][~mask[c]].sum()

    prior_skip.by_channel(solve, *kl.shape)
    return out


#: Elements above which a latent is reordered by channel slices on every CPU (numpy's take
#: releases the GIL): a 12 MP photo's y, 4 arrays of 7.6 M, 0.2 s on one core, 0.07 s on two.
PARALLEL_REORDER = 1 << 20


def _take_positions(arr: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out[c] = arr[c, index] for every channel c of (C, P) arrays; large ones by channel slices
    on threads (np.take: 3x faster than arr[:, index], 12 MP: 14 against 42 ms)."""
    workers = min(available(), arr.shape[0]) if arr.size >= PARALLEL_REORDER else 1
    if workers <= 1:
        np.take(arr, index, axis=1, out=out)
        return
    from concurrent.futures import ThreadPoolExecutor

    cuts = np.linspace(0, arr.shape[0], workers + 1).astype(int)

    def part(lo: int, hi: int) -> None:
        np.take(arr[lo:hi], index, axis=1, out=out[lo:hi])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(part, cuts[:-1], cuts[1:]))


def _ordered(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(1, C, H, W) array -> float32 (C * H * W,) in channel-major, permuted-position order."""
    arr = np.asarray(a, dtype=np.float32)
    arr = arr.reshape(arr.shape[1], -1)
    out = np.empty(arr.shape, np.float32)
    _take_positions(arr, order, out)
    return out.reshape(-1)


def _unordered(flat: np.ndarray, order: np.ndarray, shape) -> np.ndarray:
    channels = shape[1]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size, dtype=order.dtype)
    out = np.empty((channels, order.size), np.float32)
    _take_positions(flat.reshape(channels, -1), inverse, out)  # the gather, not a scatter: 2x faster
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
    """A level's block plan from its ``xPLN`` section (files before 1.3; ValueError when malformed)."""
    symbols, exps = decode_channel_plan(plan_bytes, channels, kappa)
    return plan_from_channels(symbols, exps, positions, kappa)


def plan_tags(level: Level) -> tuple[str, str]:
    """(tag of 1.3 files, tag of earlier files) of the level's block plan section."""
    return level.tag + "PL2", level.tag + "PLN"


def latent_sections() -> tuple[tuple[str, ...], ...]:
    """The sections a file needs for its latents: per entry, the tags any one of which will do."""
    return tuple(t for level in (Z_LEVEL, Y_LEVEL) for t in (plan_tags(level), (level.tag + "IDX",)))


def _read_plan2(data: bytes, level: Level, channels: int, kappa: int,
                prediction: UnitPrediction | None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(symbols, exps, skip code, ratio code) from an ``xPL2`` section."""
    head = (prior_skip.SKIP_CODES, prior_skip.RATIO_CODES) if level.skips else ()
    values, units = read_units(data, channels, kappa, prediction, head)
    symbols, exps = units_plan(units, kappa)
    code, ratio = values if level.skips else (0, 0)
    return symbols, exps, code, ratio


def read_level_plan(sections, level: Level, channels: int, positions: int, kappa: int,
                    prediction: UnitPrediction | None = None) -> rec.BlockPlan | None:
    """The level's block plan from ``sections`` (tag -> payload bytes, any mapping), whichever
    format holds it; None when the file has no plan for the level. ValueError when malformed."""
    new, old = plan_tags(level)
    _check_one_format(lambda tag: sections.get(tag), level)
    if sections.get(new) is not None:
        symbols, exps, _, _ = _read_plan2(bytes(sections[new]), level, channels, kappa, prediction)
        return plan_from_channels(symbols, exps, positions, kappa)
    if sections.get(old) is not None:
        return read_plan(bytes(sections[old]), channels, positions, kappa)
    return None


def _check_one_format(section, level: Level) -> None:
    """A level's plan comes in the sections of one format only (ValueError otherwise)."""
    new, old = plan_tags(level)
    older = (old, level.tag + "SKP") if level.skips else (old,)
    if section(new) is not None and any(section(tag) is not None for tag in older):
        raise ValueError(f"both {new} and the sections of earlier formats ({old}, {level.tag}SKP)")


def _derived_mask(sd_p: np.ndarray, symbols, exps, kappa: int, code: int, ratio: int,
                  previous: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
    """The 1.3 skip mask (flat, channel-major) from the plan and the prior scales, or None.
    ``previous``: (KL estimates, thresholds) from an earlier plan on the same prior (log_thresholds)."""
    if code == 0:
        return None
    channels = len(symbols)
    sd_p = sd_p.reshape(channels, -1)
    thr = prior_skip.log_thresholds(sd_p, prior_skip.kl_estimates(symbols, exps, kappa, ratio), previous)
    return prior_skip.threshold_mask(sd_p, thr, code).reshape(-1)


class LatentCoder:
    """The REC coder of one level of one file: ``compress`` on the encoder, ``decompress`` on the
    decoder, with the same level, file seed and kappa.

    ``block_ratio``: block size against the level's KL (channel_plan); ``skip_ratio``: the prior
    skip rule's threshold (y only; None codes every dim); ``temperature``: None picks each block's
    candidate by the "nearest" rule, a number tau samples it in proportion to q^(1/tau)/p;
    ``prediction``: the model's table of typical plan units for this level and quality
    (``bbimg.rec.plan_prior``), which makes the plan shorter; a file coded with one needs it to
    decode. ``legacy``: write the sections of format 1.1 (``xPLN``, ``YSKP``) instead of 1.3."""

    def __init__(self, level: Level, file_seed: int, kappa: int, *, block_ratio: float = DEFAULT_BLOCK_RATIO,
                 skip_ratio: float | None = None, temperature: float | None = None, device: str = "cpu",
                 prediction: UnitPrediction | None = None, legacy: bool = False):
        if skip_ratio is not None and not level.skips:
            raise ValueError(f"level {level.tag} has no skip symbols")
        self.level, self.seed, self.kappa = level, level.seed(file_seed), kappa
        self.block_ratio, self.skip_ratio = block_ratio, skip_ratio
        self.temperature, self.device = temperature, device
        self.prediction, self.legacy = prediction, legacy

    def _tag(self, part: str) -> str:
        return self.level.tag + part

    def compress(self, posterior: Gaussian, prior: Gaussian, *, size_only: bool = False,
                 choose: "Callable[[CandidateChoice, np.ndarray], np.ndarray] | None" = None,
                 want_sample: bool = True) -> CodedLatent:
        """Code a sample of ``posterior`` against ``prior``. Both are released (their arrays freed
        as soon as they are reordered for the engine).

        ``size_only`` skips the candidate search: the index stream's length is known from the plan
        alone (zero bytes of the right length stand in, and no sample is returned).
        ``want_sample=False``: no sample either (the encoder needs z's, to predict y, not y's).
        ``choose(problem, indices) -> indices``: a second look at the engine's pick (the plan, and
        so the file size, is fixed by then; see :class:`CandidateChoice`)."""
        shape = tuple(posterior.mean.shape)
        order = position_order(shape[2] * shape[3], self.seed)
        mu_q, sd_q = (_ordered(a, order) for a in posterior.release())
        mu_p, sd_p = (_ordered(a, order) for a in prior.release())
        channels = shape[1]
        if self.legacy:
            mask, plan, plan_sections, kl_total, side_bytes = self._plan_legacy(mu_q, sd_q, mu_p, sd_p, channels)
        else:
            mask, plan, plan_sections, kl_total, side_bytes = self._plan(mu_q, sd_q, mu_p, sd_p, channels)
        if mask is not None:
            np.copyto(mu_q, mu_p, where=mask)  # zero KL and no say in the candidate choice
            np.copyto(sd_q, sd_p, where=mask)
        sample = None
        if size_only:
            index_bytes = bytes((plan.index_bits + 7) // 8)
        else:
            indices = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, self.seed, temperature=self.temperature,
                                 device=self.device)
            if choose is not None:
                indices = choose(CandidateChoice(self, mu_q, sd_q, mu_p, sd_p, mask, plan, order, shape), indices)
            del mu_q, sd_q
            if want_sample:
                flat = rec.decode(mu_p, sd_p, plan, self.seed, indices, device=self.device)
                if mask is not None:
                    np.copyto(flat, mu_p, where=mask)
                sample = _unordered(flat, order, shape)
            index_bytes = rec.encode_indices(indices, plan)
        sections = plan_sections[:1] + [bbi.Section(self._tag("IDX"), index_bytes)] + plan_sections[1:]
        return CodedLatent(sections, sample, kl_total, plan.index_bits, 8 * side_bytes, plan.n_blocks)

    def _plan(self, mu_q, sd_q, mu_p, sd_p, channels: int):
        """Format 1.3: (mask, plan, [xPL2 section], KL, side bytes). For y the plan is made with the
        1.1 rank cut first; the skip code is fitted to that rule, and the plan is made again for the
        mask the decoder will derive (from that plan: the two differ in a few dims at most)."""
        kl = tiling.kl_bits(mu_q, sd_q, mu_p, sd_p).reshape(channels, -1)  # in bounded-memory chunks
        sd_p2, mask, code = sd_p.reshape(channels, -1), None, 0
        ratio = prior_skip.ratio_code(self.block_ratio)
        if self.skip_ratio:
            sd_q2 = sd_q.reshape(channels, -1)
            medians = prior_skip.channel_medians(sd_q2)
            rank = prior_skip.skip_mask(sd_p2, prior_skip.skip_symbols(sd_q2, sd_p2, self.skip_ratio, medians))
            symbols, exps = channel_plan(_kept_sum(kl, rank), self.kappa, self.block_ratio)
            estimates = prior_skip.kl_estimates(symbols, exps, self.kappa, ratio)
            thr = prior_skip.log_thresholds(sd_p2, estimates)
            code = prior_skip.choose_skip_code(sd_q2, thr, self.skip_ratio, medians)
            mask = prior_skip.threshold_mask(sd_p2, thr, code)
            symbols, exps = channel_plan(_kept_sum(kl, mask), self.kappa, self.block_ratio)
            mask = _derived_mask(sd_p, symbols, exps, self.kappa, code, ratio, (estimates, thr))
        else:
            symbols, exps = channel_plan(kl.sum(axis=1, keepdims=True), self.kappa, self.block_ratio)
        kl_total = float(kl.sum() if mask is None else _kept_sum(kl, mask).sum())
        del kl
        head = ((code, prior_skip.SKIP_CODES), (ratio, prior_skip.RATIO_CODES)) if self.level.skips else ()
        data = write_units(plan_units(symbols, exps, self.kappa), self.kappa, self.prediction, head)
        plan = plan_from_channels(symbols, exps, sd_p2.shape[1], self.kappa)
        return mask, plan, [bbi.Section(plan_tags(self.level)[0], data)], kl_total, len(data)

    def _plan_legacy(self, mu_q, sd_q, mu_p, sd_p, channels: int):
        """Format 1.1: the rank-cut skip symbols in ``YSKP`` and the plan in ``xPLN``."""
        mask, sections, side = None, [], 0
        if self.skip_ratio is not None:
            sd_p2 = sd_p.reshape(channels, -1)
            symbols = prior_skip.skip_symbols(sd_q.reshape(channels, -1), sd_p2, self.skip_ratio)
            mask = prior_skip.skip_mask(sd_p2, symbols).reshape(-1)
            skip_bytes = prior_skip.encode_skip(symbols)
            sections.append(bbi.Section(self._tag("SKP"), skip_bytes))
            side += len(skip_bytes)
        kl = tiling.kl_bits(mu_q, sd_q, mu_p, sd_p).reshape(channels, -1)
        # as 1.1 writers summed them (masked dims as zeros), for the same plans and bytes
        kept = np.where(mask.reshape(channels, -1), 0.0, kl) if mask is not None else kl
        kept = kept.sum(axis=1, keepdims=True)
        kl_total = float(kept.sum())
        del kl
        symbols, exps = channel_plan(kept, self.kappa, self.block_ratio)
        plan_bytes = encode_channel_plan(symbols, exps, self.kappa)
        plan = plan_from_channels(symbols, exps, sd_p.size // channels, self.kappa)
        return mask, plan, [bbi.Section(plan_tags(self.level)[1], plan_bytes)] + sections, kl_total, \
            side + len(plan_bytes)

    def decompress(self, prior: Gaussian, container: "bbi.Container") -> np.ndarray:
        """The latent the encoder sent, from ``prior`` (released) and the level's sections of
        ``container``. A y level without skip symbols (format 1.0 files) skips nothing.
        Raises BbiError for malformed sections."""
        shape = tuple(prior.mean.shape)
        order = position_order(shape[2] * shape[3], self.seed)
        mu_p, sd_p = (_ordered(a, order) for a in prior.release())
        channels = shape[1]
        new, old = plan_tags(self.level)
        try:
            _check_one_format(container.section, self.level)
            plan_new = container.section(new)
            if plan_new is not None:
                symbols, exps, code, ratio = _read_plan2(plan_new, self.level, channels, self.kappa, self.prediction)
                plan = plan_from_channels(symbols, exps, order.size, self.kappa)
            elif container.section(old) is not None:
                plan = read_plan(container.section(old), channels, order.size, self.kappa)
            else:
                raise ValueError(f"missing section {new}")
            index_data = container.section(self._tag("IDX"))
            if index_data is None:
                raise ValueError(f"missing section {self._tag('IDX')}")
            indices = rec.decode_indices(index_data, plan)
            sample = rec.decode(mu_p, sd_p, plan, self.seed, indices, device=self.device)
            if plan_new is not None:
                mask = _derived_mask(sd_p, symbols, exps, self.kappa, code, ratio)
            else:  # 1.1 files: rank-cut skip symbols (none in 1.0 files)
                skip = container.section(self._tag("SKP")) if self.level.skips else None
                mask = None if skip is None else prior_skip.skip_mask(
                    sd_p.reshape(channels, -1), prior_skip.decode_skip(skip, channels)).reshape(-1)
            if mask is not None:
                np.copyto(sample, mu_p, where=mask)
        except ValueError as exc:
            raise bbi.BbiError(f"corrupt file: {exc}") from exc
        return _unordered(sample, order, shape)
