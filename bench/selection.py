"""How the encoder picks among candidates: quality at the same rate for several selection rules.

    python bench/selection.py [--images N] [--qualities 30,60,90] [--temperatures nearest,0,1]

Encodes Kodak images through the real codec with each REC selection rule ("nearest": the
default, nearest a debiased target; a number tau: importance sample of q^(1/tau)/p, tau = 1 the
exact REC sample, tau = 0 the candidate most likely under q) and block ratio, decodes,
and writes bench/results/selection.csv (codec,param,image,bpp,psnr,ms_ssim,temperature,block_ratio).
The file size does not depend on tau (the plan fixes it), so PSNR differences are pure quality.
Also prints the posterior-mean reconstruction (no coding) as the upper reference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, kodak_images, ms_ssim, psnr, write_csv  # noqa: E402

from bbimg import codec  # noqa: E402
from bbimg.models import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--qualities", default="30,60,90")
    ap.add_argument("--temperatures", default="nearest,0,1")
    ap.add_argument("--ratios", default="1.0")
    args = ap.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    temps = [None if t == "nearest" else float(t) for t in args.temperatures.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    from ideal_rd import ideal_points
    _, model = load_model()
    rows = []
    for name, image in kodak_images(args.images):
        pixels = image.shape[0] * image.shape[1]
        for q in qualities:
            _, _, mean_rec = ideal_points(model, image, codec.quality_to_t(q))
            rows.append(dict(codec="posterior-mean", param=q, image=name, bpp=float("nan"),
                             psnr=psnr(image, mean_rec), ms_ssim=ms_ssim(image, mean_rec), temperature="",
                             block_ratio=""))
            for ratio in ratios:
                for tau in temps:
                    data = codec.encode(image, q, temperature=tau, block_ratio=ratio)
                    dec = np.asarray(codec.decode(data).convert("RGB"))
                    rows.append(dict(codec="bbimg", param=q, image=name, bpp=len(data) * 8 / pixels,
                                     psnr=psnr(image, dec), ms_ssim=ms_ssim(image, dec),
                                     temperature="nearest" if tau is None else tau,
                                     block_ratio=ratio))
        print(f"{name} done", file=sys.stderr, flush=True)
    write_csv(rows, RESULTS / "selection.csv")
    print(f"{'q':>4} {'ratio':>5} {'tau':>5} {'bpp':>7} {'psnr':>7} {'ms-ssim':>8}")
    keys = sorted({(r["param"], r["block_ratio"], r["temperature"]) for r in rows if r["codec"] == "bbimg"},
                  key=lambda k: tuple(map(str, k)))
    for q, ratio, tau in keys:
        sel = [r for r in rows if r["codec"] == "bbimg" and (r["param"], r["block_ratio"], r["temperature"]) == (q, ratio, tau)]
        print(f"{q:>4} {ratio:>5} {tau:>5} {np.mean([r['bpp'] for r in sel]):7.4f} "
              f"{np.mean([r['psnr'] for r in sel]):7.2f} {np.mean([r['ms_ssim'] for r in sel]):8.4f}")
    for q in qualities:
        sel = [r for r in rows if r["codec"] == "posterior-mean" and r["param"] == q]
        print(f"{q:>4} posterior mean (not codable)  {np.mean([r['psnr'] for r in sel]):7.2f}")


if __name__ == "__main__":
    main()
