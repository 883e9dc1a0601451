"""What the REC coder loses at the top of the quality range, and which coder settings win it back.

    python bench/coder_high_rate.py [--images kodim01,kodim05,kodim13,kodim20] [--quality 100]
                                    [--variants default,ratio-1.25,...] [--model NAME]

For each image, encodes at ``--quality`` once per variant through ``bbimg.encode`` (real files,
headers included), decodes with ``bbimg.decode``, and measures the model's ideal curve around it
(KL rate, image decoded from an exact posterior sample; ``ideal_rd.ideal_points``) at qualities
t - 0.15 ... t + 0.05 (up to 1). The coder's loss of a file is the ideal curve's PSNR at the file's
bpp (interpolated in log-rate; past the curve's top, extended along its last segment) minus the
file's PSNR: what the coder costs at equal rate. ``same_t_gap_db`` is the plainer figure: the exact
sample's PSNR at the same quality minus the file's (it ignores that the file also spends more bits).

Writes bench/results/coder_high_rate.csv (variant,image,quality,bpp,psnr,ideal_psnr_at_bpp,loss_db,
same_t_gap_db,encode_s) and prints the mean of each variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, RESULTS, psnr, write_csv  # noqa: E402

import bbimg  # noqa: E402

VARIANTS = {  # name: encode keyword arguments
    "default": {},
    "ratio-1.25": {"block_ratio": 1.25},
    "ratio-1.5": {"block_ratio": 1.5},
    "kappa-18": {"kappa": 18},
    "effort-6": {"effort": 6},
    "ratio-1.0": {"block_ratio": 1.0},
    "ratio-0.9": {"block_ratio": 0.9},
    "effort-6-kappa-18": {"effort": 6, "kappa": 18},
    "effort-6-ratio-1.0": {"effort": 6, "block_ratio": 1.0},
    "effort-7": {"effort": 7},
    "effort-8": {"effort": 8},
}
COLUMNS = ("variant", "image", "quality", "bpp", "psnr", "ideal_psnr_at_bpp", "loss_db", "same_t_gap_db", "encode_s")


def psnr_at_rate(bpp: float, curve_bpp: np.ndarray, curve_psnr: np.ndarray) -> float:
    """The curve's PSNR at ``bpp``, linear in log-rate; past its ends along the end segments."""
    x = np.log(curve_bpp)
    if np.log(bpp) > x[-1]:
        slope = (curve_psnr[-1] - curve_psnr[-2]) / (x[-1] - x[-2])
        return float(curve_psnr[-1] + slope * (np.log(bpp) - x[-1]))
    return float(np.interp(np.log(bpp), x, curve_psnr))


def ideal_curve(model, image: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(bpp, PSNR) of exact posterior samples at qualities around t, sorted by rate, and the PSNR at t."""
    import torch

    from ideal_rd import ideal_points

    points, at_t = [], float("nan")
    for tq in sorted({min(1.0, max(0.0, t + d)) for d in (-0.15, -0.1, -0.05, 0.0, 0.05)}):
        with torch.no_grad():
            bpp, sample, _ = ideal_points(model, image, tq)
        points.append((bpp, psnr(image, sample)))
        if abs(tq - t) < 1e-9:
            at_t = points[-1][1]
    points.sort()
    return np.array([p[0] for p in points]), np.array([p[1] for p in points]), at_t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="kodim01,kodim05,kodim13,kodim20")
    parser.add_argument("--quality", type=int, default=100)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "coder_high_rate.csv")
    args = parser.parse_args()
    import torch

    from bbimg.codec import quality_to_t
    from bbimg.models import DEFAULT_MODEL, load_model

    torch.set_num_threads(1)
    model_name = args.model or DEFAULT_MODEL
    _, model = load_model(model_name)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    rows = []
    for name in args.images.split(","):
        image = np.asarray(Image.open(KODAK / f"{name}.png").convert("RGB"))
        ideal_bpp, ideal_psnr, ideal_at_t = ideal_curve(model, image, quality_to_t(args.quality))
        for variant in variants:
            start = time.perf_counter()
            data = bbimg.encode(image, quality=args.quality, model=model_name, **VARIANTS[variant])
            encode_s = time.perf_counter() - start
            decoded = np.asarray(bbimg.decode(data).convert("RGB"))
            bpp = len(data) * 8 / (image.shape[0] * image.shape[1])
            p = psnr(image, decoded)
            at_bpp = psnr_at_rate(bpp, ideal_bpp, ideal_psnr)
            rows.append(dict(variant=variant, image=name, quality=args.quality, bpp=bpp, psnr=p,
                             ideal_psnr_at_bpp=at_bpp, loss_db=at_bpp - p, same_t_gap_db=ideal_at_t - p,
                             encode_s=encode_s))
            print(f"{name} {variant:11s} {bpp:.3f} bpp {p:.2f} dB, ideal {at_bpp:.2f} dB at that rate "
                  f"(loss {at_bpp - p:.2f} dB), encode {encode_s:.1f} s", flush=True)
    write_csv(rows, args.out, COLUMNS)
    print(f"\nmean over {len(args.images.split(','))} images at -q {args.quality} ({model_name}):")
    for variant in variants:
        r = [row for row in rows if row["variant"] == variant]
        print(f"  {variant:11s} {np.mean([x['bpp'] for x in r]):.3f} bpp  {np.mean([x['psnr'] for x in r]):.2f} dB  "
              f"loss {np.mean([x['loss_db'] for x in r]):.2f} dB (same t: {np.mean([x['same_t_gap_db'] for x in r]):.2f})  encode {np.mean([x['encode_s'] for x in r]):.1f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
