"""What the fast synthesis (``bbimg decode --fast``) costs in quality, and what it saves in time.

    python bench/fast_synthesis.py [--images N] [--qualities 1,20,40,60,75,80,100]

Encodes each Kodak image once per quality (``bbimg.encode``, the default model and effort), then
decodes the same file with the model's synthesis and with its fast synthesis (``bbimg.decode``,
``fast=True``), timing the synthesis stage of each decode in this process (the sessions are
made on a first, untimed decode). Writes bench/results/fast_synthesis.csv (image,quality,bpp,psnr,
psnr_fast,ms_ssim,ms_ssim_fast,synthesis_s,synthesis_fast_s) and prints the means per quality.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, kodak_images, ms_ssim, psnr, write_csv  # noqa: E402

import bbimg  # noqa: E402

COLUMNS = ("image", "quality", "bpp", "psnr", "psnr_fast", "ms_ssim", "ms_ssim_fast", "synthesis_s", "synthesis_fast_s")


def synthesis_seconds(data: bytes, fast: bool) -> tuple[np.ndarray, float]:
    """(decoded pixels, seconds from the synthesis stage's start to the end of the decode)."""
    marks = {}
    image = bbimg.decode(data, fast=fast, progress=lambda stage: marks.setdefault(stage, time.perf_counter()))
    return np.asarray(image.convert("RGB")), time.perf_counter() - marks["synthesis"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--qualities", default="1,20,40,60,75,80,100")
    ap.add_argument("--out", type=Path, default=RESULTS / "fast_synthesis.csv")
    args = ap.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    rows = []
    for name, image in kodak_images(args.images):
        for q in qualities:
            data = bbimg.encode(image, quality=q)
            synthesis_seconds(data, False)
            synthesis_seconds(data, True)   # sessions of this quality made: the timed decodes reuse them
            full, full_s = synthesis_seconds(data, False)
            fast, fast_s = synthesis_seconds(data, True)
            rows.append(dict(image=name, quality=q, bpp=len(data) * 8 / (image.shape[0] * image.shape[1]),
                             psnr=psnr(image, full), psnr_fast=psnr(image, fast), ms_ssim=ms_ssim(image, full),
                             ms_ssim_fast=ms_ssim(image, fast), synthesis_s=full_s, synthesis_fast_s=fast_s))
            r = rows[-1]
            print(f"{name} q{q}: {r['bpp']:.3f} bpp, {r['psnr']:.2f} -> {r['psnr_fast']:.2f} dB, synthesis "
                  f"{full_s:.3f} -> {fast_s:.3f} s", flush=True)
    write_csv(rows, args.out, COLUMNS)
    print(f"\nmeans over {len({r['image'] for r in rows})} images:")
    for q in qualities:
        r = [x for x in rows if x["quality"] == q]
        m = {k: float(np.mean([x[k] for x in r])) for k in COLUMNS[2:]}
        print(f"  q{q}: {m['bpp']:.3f} bpp, PSNR {m['psnr']:.2f} -> {m['psnr_fast']:.2f} dB "
              f"({m['psnr_fast'] - m['psnr']:+.2f}), MS-SSIM {m['ms_ssim']:.4f} -> {m['ms_ssim_fast']:.4f}, "
              f"synthesis {m['synthesis_s']:.3f} -> {m['synthesis_fast_s']:.3f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
