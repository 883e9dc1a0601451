"""CUDA path: identical indices to the CPU path. Skipped without a usable GPU."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bbimg import rec

pytestmark = pytest.mark.skipif(not rec.cuda_available(), reason="no CUDA device (or CPU-only build)")


def _problem(n, bits, seed):
    rng = np.random.default_rng(seed)
    kl = np.where(rng.random(n) < 0.4, 1e-4, np.exp(rng.uniform(math.log(0.05), math.log(6), n)))
    kl *= bits / kl.sum()
    nats = kl * math.log(2)
    mu_p = rng.normal(0, 1, n)
    sg_p = np.exp(rng.normal(0, 0.5, n))
    r = np.exp(-rng.uniform(0, 0.3, n) * np.minimum(nats, 1))
    d = np.sqrt(np.maximum(2 * (nats + np.log(r)) + 1 - r * r, 0))
    mu_q = mu_p + d * sg_p * np.where(rng.random(n) < 0.5, -1, 1)
    return [a.astype(np.float32) for a in (mu_q, r * sg_p, mu_p, sg_p)]


@pytest.mark.parametrize("kappa", [9, 12, 16])
@pytest.mark.parametrize("tau,selection", [(0.0, "tempered"), (0.0, "power"), (0.0, "nearest"), (1.0, "tempered"), (0.4, "tempered")])
def test_cuda_matches_cpu(kappa, tau, selection):
    mq, sq, mp, sp = _problem(20000 if kappa < 16 else 6000, 9000.0 if kappa < 16 else 4000.0, kappa)
    plan = rec.plan_blocks(rec.kl_bits(mq, sq, mp, sp), kappa, max_block_len=256)
    cpu = rec.encode(mq, sq, mp, sp, plan, seed=5, temperature=tau, selection=selection, device="cpu")
    gpu = rec.encode(mq, sq, mp, sp, plan, seed=5, temperature=tau, selection=selection, device="cuda")
    # Statistics are computed with bit-identical arithmetic, so even ties resolve alike.
    assert np.array_equal(cpu, gpu), np.nonzero(cpu != gpu)[0][:10]
    z = rec.decode(mp, sp, plan, 5, gpu)
    assert np.isfinite(z).all()
