"""Synthetic REC problems for the REC tests: Gaussian q, p with a chosen KL per dim, planned the
way the codec plans a latent level (per-channel plans, bbimg.rec.channel_plan)."""
from __future__ import annotations

import math

import numpy as np

from bbimg import rec
from bbimg.rec.channel_plan import DEFAULT_BLOCK_RATIO, channel_plan, plan_from_channels


def gaussians_with_kl(kl_bits: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """float32 (mu_q, sigma_q, mu_p, sigma_p) with KL(q || p) = kl_bits per dim: the KL comes
    from a mean shift plus a mild variance change."""
    n = kl_bits.size
    nats = kl_bits * math.log(2)
    mu_p = rng.normal(0, 1, n)
    sg_p = np.exp(rng.normal(0, 0.5, n))
    r = np.exp(-rng.uniform(0, 0.3, n) * np.minimum(nats, 1))
    d2 = np.maximum(2 * (nats + np.log(r)) + 1 - r * r, 0)
    mu_q = mu_p + np.sqrt(d2) * sg_p * np.where(rng.random(n) < 0.5, -1, 1)
    return [a.astype(np.float32) for a in (mu_q, r * sg_p, mu_p, sg_p)]


def kl_spread(n: int, total_bits: float, rng: np.random.Generator) -> np.ndarray:
    """A spread of per-dim KL summing to total_bits: 40% ~0, the rest log-uniform 0.05..6 bits."""
    kl = np.where(rng.random(n) < 0.4, 1e-4, np.exp(rng.uniform(math.log(0.05), math.log(6), n)))
    return kl * (total_bits / kl.sum())


def problem(n: int, total_bits: float, seed: int = 0) -> list[np.ndarray]:
    """n dims, total_bits of KL in all (kl_spread)."""
    rng = np.random.default_rng(seed)
    return gaussians_with_kl(kl_spread(n, total_bits, rng), rng)


def channel_problem(channel_bits, positions: int, kappa: int, seed: int = 0,
                    ratio: float = DEFAULT_BLOCK_RATIO):
    """(mu_q, sigma_q, mu_p, sigma_p, plan): channels of ``positions`` dims with the given KL each,
    planned as the codec plans them. Channels under half a bit get k = 0 blocks, channels under
    one block's worth one private-path block (k < 10 at kappa >= 10), richer ones k = kappa blocks."""
    rng = np.random.default_rng(seed)
    kl = np.concatenate([kl_spread(positions, max(float(b), 1e-6), rng) for b in channel_bits])
    mq, sq, mp, sp = gaussians_with_kl(kl, rng)
    coded_kl = rec.kl_bits(mq, sq, mp, sp).reshape(len(channel_bits), positions)
    symbols, exps = channel_plan(coded_kl, kappa, ratio)
    return mq, sq, mp, sp, plan_from_channels(symbols, exps, positions, kappa)


#: 12 channels x 250 positions, ~1,500 bits: k = 0, private-path and pool blocks at kappa 12.
SMALL_CHANNEL_BITS = (0.1, 0.3, 2.0, 5.0, 8.0, 30.0, 60.0, 120.0, 200.0, 300.0, 350.0, 425.0)


def small_problem():
    """The shared small problem of the REC tests (kappa 12)."""
    return channel_problem(SMALL_CHANNEL_BITS, 250, 12, seed=1)


def level_with_prior_skip(rng: np.random.Generator, channels: int = 6, h: int = 12, w: int = 10):
    """((mu_q, sd_q), (mu_p, sd_p)), each (1, channels, h, w) float32: sigma_q = 1 and the prior
    sometimes barely wider, so the prior skip rule has dims to skip and dims to keep."""
    shape = (1, channels, h, w)
    sd_p = np.exp(rng.normal(0.5, 0.6, shape)).astype(np.float32)
    sd_q = np.full(shape, 1.0, np.float32)
    mu_p = rng.normal(0, 1, shape).astype(np.float32)
    mu_q = (mu_p + rng.normal(0, 1, shape) * np.sqrt(np.maximum(sd_p**2 - 1, 0))).astype(np.float32)
    return (mu_q, sd_q), (mu_p, sd_p)
