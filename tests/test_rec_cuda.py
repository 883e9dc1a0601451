"""CUDA path of the REC engine: the same indices and decoded samples as the CPU path (runs only
where a CUDA build finds a device), and a clear refusal of device="cuda" everywhere else."""
from __future__ import annotations

import numpy as np
import pytest
from rec_problems import SMALL_CHANNEL_BITS, channel_problem

from bbimg import rec
from bbimg.rec import BlockPlan, RecError

needs_cuda = pytest.mark.skipif(not rec.cuda_available(), reason="no CUDA device (or CPU-only build)")


def _problem(kappa: int):
    """~9,000 dims over 36 channels: k = 0, private-path and (kappa >= 10) pool blocks."""
    return channel_problem(SMALL_CHANNEL_BITS * 3, 250, kappa, seed=kappa)


def _same_on_both(mq, sq, mp, sp, plan, tau):
    cpu = rec.encode(mq, sq, mp, sp, plan, 5, temperature=tau, device="cpu")
    gpu = rec.encode(mq, sq, mp, sp, plan, 5, temperature=tau, device="cuda")
    # Statistics are computed with bit-identical arithmetic, so even ties resolve alike.
    assert np.array_equal(cpu, gpu), np.nonzero(cpu != gpu)[0][:10]
    z_cpu = rec.decode(mp, sp, plan, 5, cpu, device="cpu")
    z_gpu = rec.decode(mp, sp, plan, 5, gpu, device="cuda")
    assert np.array_equal(z_cpu.view(np.uint32), z_gpu.view(np.uint32))
    return cpu


@needs_cuda
@pytest.mark.parametrize("kappa", [9, 12, 16])
@pytest.mark.parametrize("tau", [None, 0.0, 0.4, 1.0])
def test_cuda_matches_cpu(kappa, tau):
    mq, sq, mp, sp, plan = _problem(kappa)
    assert (plan.exponents > 0).any()
    _same_on_both(mq, sq, mp, sp, plan, tau)


@needs_cuda
def test_cuda_matches_cpu_on_long_pool_blocks_and_degenerate_plans():
    rng = np.random.default_rng(3)
    n = 1728 + 2592 + 7
    mq, mp = rng.normal(0, 0.05, n).astype(np.float32), np.zeros(n, np.float32)
    sq, sp = np.full(n, 0.995, np.float32), np.ones(n, np.float32)
    # two pool blocks of different widths (different tile heights on the CPU) and a private block
    plan = BlockPlan(np.array([1728, 2592, 7], np.int32), np.array([16, 12, 5], np.uint8), 16)
    for tau in (None, 1.0):
        _same_on_both(mq, sq, mp, sp, plan, tau)
    # only 0-bit blocks (nothing to score), and no dims at all
    zero = BlockPlan(np.array([n], np.int32), np.zeros(1, np.uint8), 16)
    assert _same_on_both(mq, sq, mp, sp, zero, None).tolist() == [0]
    e = np.zeros(0, np.float32)
    assert _same_on_both(e, e, e, e, BlockPlan(np.zeros(0, np.int32), np.zeros(0, np.uint8), 16), 1.0).size == 0


@pytest.mark.skipif(rec.cuda_available(), reason="CUDA is available here")
def test_cuda_device_is_refused_clearly_without_cuda():
    mq, sq, mp, sp, plan = channel_problem((5.0, 40.0), 50, 12)
    with pytest.raises(RecError, match="device 'cuda' is not available: "):
        rec.encode(mq, sq, mp, sp, plan, 1, device="cuda")
    with pytest.raises(RecError, match="device 'cuda' is not available: "):
        rec.decode(mp, sp, plan, 1, np.zeros(plan.n_blocks, np.uint32), device="cuda")
    info = rec.core_info()
    if not info["cuda_compiled"]:
        assert "built without CUDA" in info["cuda"]
