"""What each encoder-side choice of the coder is worth: BD-rate against the default.

    python bench/coder_ablation.py [--images kodim01,kodim05,kodim13,kodim20] [--qualities 5,25,45,65,85,100]

Encodes Kodak images through ``bbimg.encode`` (real files, headers included) and decodes them with
``bbimg.decode``, once per variant:

* ``default``: the shipped settings (prior skip at ratio 1.25, z block ratio 1.3 / 1.1 of y's);
* ``no-skip``: ``skip_ratio=0`` (every y dim coded, as in format 1.0);
* ``z-ratio-1``: z gets the same block ratio as y (``z_ratio_gain=1``);
* ``both-off``: neither;
* ``skip-1.4``: a larger skip ratio, for the trend.

Writes bench/results/coder_ablation.csv (variant,image,quality,bpp,psnr) and prints each
variant's BD-rate (PSNR, per image then averaged) against ``default``: positive = the variant
needs more bits. docs/rec.md section 1c has the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, RESULTS, bd_rate, psnr, write_csv  # noqa: E402

import bbimg  # noqa: E402

VARIANTS = {  # name: encode keyword arguments
    "default": {},
    "no-skip": {"skip_ratio": 0.0},
    "z-ratio-1": {"z_ratio_gain": 1.0},
    "both-off": {"skip_ratio": 0.0, "z_ratio_gain": 1.0},
    "skip-1.4": {"skip_ratio": 1.4},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="kodim01,kodim05,kodim13,kodim20")
    ap.add_argument("--qualities", default="5,25,45,65,85,100")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS / "coder_ablation.csv")
    args = ap.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    variants = args.variants.split(",")
    if variants[0] != "default" or any(v not in VARIANTS for v in variants):
        raise SystemExit(f"--variants: 'default' first, then any of {', '.join(VARIANTS)}")
    rows = []
    for name in args.images.split(","):
        with Image.open(KODAK / f"{name}.png") as im:
            original = np.asarray(im.convert("RGB"))
        for variant in variants:
            for q in qualities:
                data = bbimg.encode(original, quality=q, **VARIANTS[variant])
                decoded = np.asarray(bbimg.decode(data).convert("RGB"))
                rows.append(dict(variant=variant, image=name, quality=q,
                                 bpp=8 * len(data) / (original.shape[0] * original.shape[1]),
                                 psnr=psnr(original, decoded)))
        print(name, "done", flush=True)
    write_csv(rows, args.out, ["variant", "image", "quality", "bpp", "psnr"])
    images = sorted({r["image"] for r in rows})

    def curve(variant, image):
        pts = sorted((r["bpp"], r["psnr"]) for r in rows if r["variant"] == variant and r["image"] == image)
        return [p[0] for p in pts], [p[1] for p in pts]

    print("BD-rate (PSNR) against default, per image and mean; positive = more bits:")
    for variant in variants[1:]:
        per = [bd_rate(*curve("default", im), *curve(variant, im)) for im in images]
        print(f"  {variant:10s} " + " ".join(f"{v:+6.2f}%" for v in per) + f"   mean {np.nanmean(per):+.2f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
