"""Benchmark of the REC engine: speed (bench/results/rec_bench.csv) and rate/fidelity
trade-offs (bench/results/rec_fidelity.csv).

    python bench/rec_bench.py [--quick] [--threads N]

Problems are synthetic Gaussian posteriors/priors built from a target per-dim KL profile, laid
out as channels x positions and coded as the codec codes a latent level: positions in the seeded
order, per-channel plans (``bbimg.rec.channel_plan``, default block ratio). ``kodak`` is the size
of a Kodak image's latent (300,000 dims, 200,000 bits of KL) as 200 channels of 1,500 positions,
~40% of the channels at ~0 KL and the other dims log-uniform in 0.05..6 bits; ``small`` is a
quick problem (20 channels). Each runs with the codec's "nearest" rule and the tau = 1 sample.
The fidelity table compares the selection rules ("nearest"; tempered at tau 0 and 1) over kappa
and the block ratio.

Alongside the engine it times a vectorised NumPy reference of the same algorithm (shared
Philox pool, float64 matmul scoring per group of blocks, argmax) on a subset of blocks and
extrapolates by candidate work (stated in the ``numpy_note`` column), and measures the
machine's fp32 GEMM rate (numpy matmul, OpenBLAS threads as configured) to report the fraction
of it the engine's scoring achieves.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bbimg import rec  # noqa: E402
from bbimg.rec import channel_plan as CP  # noqa: E402
from bbimg.rec import reference as R  # noqa: E402

OUT = ROOT / "bench" / "results"


def kl_profile(n: int, total: float, positions: int, zero_frac: float = 0.4, seed: int = 0) -> np.ndarray:
    """Per-dim KL of n // positions channels: ~zero_frac of the channels at ~0 KL."""
    rng = np.random.default_rng(seed)
    zero = np.repeat(rng.random(n // positions) < zero_frac, positions)
    kl = np.empty(n)
    kl[zero] = 10 ** rng.uniform(-5, -2.5, zero.sum())
    kl[~zero] = np.exp(rng.uniform(math.log(0.05), math.log(6.0), (~zero).sum()))
    kl[~zero] *= (total - kl[zero].sum()) / kl[~zero].sum()
    return kl


def gaussians(kl_bits: np.ndarray, seed: int = 1):
    """q, p with exactly the given KL(q||p): a share of each dim's KL from a variance change."""
    rng = np.random.default_rng(seed)
    n = kl_bits.size
    nats = kl_bits * math.log(2)
    mu_p = rng.normal(0, 1, n)
    sg_p = np.exp(rng.normal(0, 0.5, n))
    target = rng.uniform(0.2, 0.8, n) * nats  # -ln r + (r^2 - 1)/2 = target, r in (0, 1]
    lo, hi = np.full(n, 1e-30), np.ones(n)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        big = -np.log(mid) + 0.5 * (mid * mid - 1) > target
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    r = 0.5 * (lo + hi)
    d = np.sqrt(np.maximum(2 * (nats + np.log(r)) + 1 - r * r, 0))
    mu_q = mu_p + np.where(rng.random(n) < 0.5, -1, 1) * d * sg_p
    return [a.astype(np.float32) for a in (mu_q, r * sg_p, mu_p, sg_p)]


def gemm_rate(n: int = 3072, reps: int = 3) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def work(plan: rec.BlockPlan) -> float:
    """Candidate-dimension pairs scored: sum_b 2^k_b * len_b (4 flops each)."""
    return float(((1 << plan.exponents.astype(np.int64)) * plan.lengths).sum())


def _rule(tau: float | None) -> str:
    return "nearest" if tau is None else f"tempered tau={tau:g}"


def channel_layout(kl0: np.ndarray, positions: int, seed: int = 1):
    """q, p with the given KL, each channel's positions in the codec's seeded order."""
    mq, sq, mp, sp = gaussians(kl0, seed)
    channels = kl0.size // positions
    order = CP.position_order(positions, 1234)
    perm = (np.arange(channels)[:, None] * positions + order[None, :]).reshape(-1)
    return [a[perm] for a in (mq, sq, mp, sp)]


def channel_plan(kl: np.ndarray, positions: int, kappa: int, ratio: float = CP.DEFAULT_BLOCK_RATIO):
    """(plan, side bytes, decoder's plan reader) as the codec plans a level."""
    channels = kl.size // positions
    symbols, exps = CP.channel_plan(kl.reshape(channels, positions), kappa, ratio)
    side = CP.encode_channel_plan(symbols, exps, kappa)

    def read_plan():
        return CP.plan_from_channels(*CP.decode_channel_plan(side, channels, kappa), positions, kappa)
    return CP.plan_from_channels(symbols, exps, positions, kappa), side, read_plan


def run_problem(name, kl0, positions, kappa, threads, tau, reps, numpy_frac):
    mq, sq, mp, sp = channel_layout(kl0, positions)
    kl = rec.kl_bits(mq, sq, mp, sp)
    t0 = time.perf_counter()
    plan, side, read_plan = channel_plan(kl, positions, kappa)
    t_plan = time.perf_counter() - t0
    enc = []
    for _ in range(reps):
        t0 = time.perf_counter()
        idx = rec.encode(mq, sq, mp, sp, plan, seed=1234, temperature=tau, threads=threads)
        enc.append(time.perf_counter() - t0)
    payload = rec.encode_indices(idx, plan)
    dec = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p2 = read_plan()
        i2 = rec.decode_indices(payload, p2)
        z = rec.decode(mp, sp, p2, 1234, i2, threads=threads)
        dec.append(time.perf_counter() - t0)
    assert np.array_equal(i2, idx)
    # NumPy reference on a subset of blocks, extrapolated by candidate work.
    step = max(1, int(round(1 / numpy_frac)))
    blocks = np.arange(0, plan.n_blocks, step)
    sub = rec.BlockPlan(plan.lengths[blocks], plan.exponents[blocks], kappa)
    t0 = time.perf_counter()
    R.encode(mq, sq, mp, sp, plan, 1234, temperature=tau, blocks=blocks)
    t_np = (time.perf_counter() - t0) * work(plan) / max(work(sub), 1.0)
    w = work(plan)
    enc_s = min(enc)
    return {
        "problem": name, "dims": plan.n_dims, "kl_bits": round(float(kl.sum()), 1), "kappa": kappa,
        "encode_s": round(enc_s, 4), "decode_s": round(min(dec), 4),
        "bits": plan.index_bits, "side_bits": 8 * len(side),
        "index_over_kl": round(plan.index_bits / kl.sum(), 4),
        "side_pct_of_kl": round(800 * len(side) / kl.sum(), 2),
        "total_over_kl": round((plan.index_bits + 8 * len(side)) / kl.sum(), 4),
        "blocks": plan.n_blocks, "block_ratio": CP.DEFAULT_BLOCK_RATIO, "rule": _rule(tau),
        "threads": threads or os.cpu_count(),
        "plan_s": round(t_plan, 4), "gflops": round(4 * w / enc_s / 1e9, 1),
        "numpy_encode_s": round(t_np, 2),
        "numpy_note": f"reference on every {step}th block ({len(blocks)} blocks), extrapolated by work",
        "fidelity": round(float(np.mean(((z - mq) / sq) ** 2)), 4),
        "block_kl_std": round(float(np.std(np.add.reduceat(kl, plan.starts))), 2) if plan.n_blocks else 0.0,
    }


def fidelity_table(n, total, positions, kappas, ratios, taus, threads):
    mq, sq, mp, sp = channel_layout(kl_profile(n, total, positions, seed=5), positions, seed=6)
    kl = rec.kl_bits(mq, sq, mp, sp)
    active = kl > 0.05
    rows = []
    for kappa in kappas:
        for ratio in ratios:
            plan, side, _ = channel_plan(kl, positions, kappa, ratio)
            side = 8 * len(side)
            for tau in taus:
                t0 = time.perf_counter()
                idx = rec.encode(mq, sq, mp, sp, plan, seed=77, temperature=tau, threads=threads)
                te = time.perf_counter() - t0
                z = rec.decode(mp, sp, plan, 77, idx)
                e2 = ((z - mq) / sq) ** 2
                rows.append({
                    "kappa": kappa, "block_ratio": ratio, "rule": _rule(tau),
                    "index_overhead_pct": round(100 * (plan.index_bits / kl.sum() - 1), 2),
                    "side_pct": round(100 * side / kl.sum(), 2),
                    "total_overhead_pct": round(100 * ((plan.index_bits + side) / kl.sum() - 1), 2),
                    "fidelity": round(float(e2.mean()), 4),
                    "fidelity_active": round(float(e2[active].mean()), 4),
                    "nmse_to_mean": round(float(((z - mq) ** 2).sum() / (sq.astype(np.float64) ** 2).sum()), 4),
                    "encode_s": round(te, 3), "dims": n, "kl_bits": round(float(kl.sum()), 1),
                })
                r = rows[-1]
                print("  kappa %2d ratio %.1f %-17s: index %+6.2f%%  side %5.2f%%  total %+6.2f%%  "
                      "fidelity %.3f (active %.3f)  nmse %.3f  %.2fs" % (
                          kappa, ratio, r["rule"], r["index_overhead_pct"], r["side_pct"],
                          r["total_overhead_pct"], r["fidelity"], r["fidelity_active"], r["nmse_to_mean"],
                          te), flush=True)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small problems only")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    info = rec.core_info()
    print(f"bbimg._core {info['version']} kernels={info['kernels']} cuda={info['cuda']}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"loadavg {os.getloadavg()[0]:.2f} (other processes compete for the cores)")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')!r} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')!r}")
    gflops = gemm_rate(1536 if args.quick else 3072)
    print(f"numpy fp32 GEMM: {gflops:.1f} GFLOP/s")
    # (name, KL per dim, positions per channel, kappa)
    probs = [("small", kl_profile(30_000, 20_000.0, 1500), 1500, 12)]
    if not args.quick:  # the codec's setting on a Kodak-sized latent level
        probs += [("kodak", kl_profile(300_000, 200_000.0, 1500), 1500, 16)]
    rows = []
    for name, kl0, positions, kappa in probs:
        for tau in (None, 1.0):
            r = run_problem(name, kl0, positions, kappa, args.threads, tau, args.reps,
                            0.02 if kappa >= 16 else 0.2)
            r["gemm_gflops"] = round(gflops, 1)
            r["gemm_fraction"] = round(r["gflops"] / gflops, 3)
            r["loadavg"] = round(os.getloadavg()[0], 2)
            rows.append(r)
            print(f"{name:6s} {r['rule']:17s} dims={r['dims']} KL={r['kl_bits']:.0f} kappa={kappa}: "
                  f"encode {r['encode_s']:.3f}s decode {r['decode_s']:.4f}s | index {r['bits']} bits "
                  f"({r['index_over_kl']:.4f}x KL) side {r['side_bits']} bits ({r['side_pct_of_kl']:.2f}%) "
                  f"total {r['total_over_kl']:.3f}x | {r['gflops']:.1f} GFLOP/s = "
                  f"{100 * r['gemm_fraction']:.0f}% of numpy GEMM | numpy reference ~{r['numpy_encode_s']:.1f}s "
                  f"({r['numpy_note']}) | fidelity {r['fidelity']:.3f}", flush=True)
    write_csv(OUT / "rec_bench.csv", rows)
    n, total = (20_000, 13_000.0) if args.quick else (60_000, 40_000.0)
    print(f"fidelity table ({n:,} dims, {total:,.0f} bits, channels of 1,000 positions):")
    kappas = (10, 12) if args.quick else (10, 12, 14, 16)
    fid = fidelity_table(n, total, 1000, kappas, (0.8, 1.0, 1.1, 1.3), (None, 0.0, 1.0), args.threads)
    write_csv(OUT / "rec_fidelity.csv", fid)
    print(f"wrote {OUT / 'rec_bench.csv'} and {OUT / 'rec_fidelity.csv'}")


if __name__ == "__main__":
    main()
