"""Side information of a file: block plans and skip information, format 1.3 against 1.1.

    python bench/side_info.py [--images kodim01,...] [--qualities 1,5,20,40,60,80,100]

Encodes Kodak images through ``bbimg.encode`` (real files) and decodes them with ``bbimg.decode``,
once per variant:

* ``1.1``: the coding of format 1.1 (``xPLN``: symbols and exponents under one adaptive model over
  96 symbols; ``YSKP``: a rank-cut skip symbol per y channel);
* ``1.3-generic``: format 1.3 without the model's plan-unit table (``xPL2``: one unit per channel
  under an adaptive model; the y skip mask derived from the plan and sigma_p, one code per image);
* ``1.3``: the default, with the model's table (bbimg.rec.plan_prior).

Writes bench/results/side_info.csv (image, quality, variant, bytes, plan_bytes, container_bytes,
side_bytes, bpp, psnr; ``plan_bytes`` = the plan and skip sections' payloads, ``container_bytes`` =
header, section table and CRCs, ``side_bytes`` = their sum: everything that is not a candidate
index) and prints the mean per quality and each 1.3 variant's BD-rate (PSNR, per image then
averaged) against 1.1: negative = fewer bits for the same quality.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, RESULTS, bd_rate, psnr, write_csv  # noqa: E402

import bbimg  # noqa: E402
from bbimg import codec  # noqa: E402
from bbimg.latent_coder import LatentCoder  # noqa: E402
from bbimg.rec import plan_prior  # noqa: E402

PLAN_TAGS = ("ZPLN", "YPLN", "YSKP", "ZPL2", "YPL2")
IMAGES = "kodim01,kodim03,kodim05,kodim08,kodim13,kodim15,kodim20,kodim23"


def variant(name: str):
    """A context in which bbimg.encode writes the variant's files."""
    if name == "1.1":
        return mock.patch.object(codec, "LatentCoder", functools.partial(LatentCoder, legacy=True))
    if name == "1.3-generic":
        return mock.patch.object(plan_prior, "predictions", lambda *args: {})
    return contextlib.nullcontext()


VARIANTS = ("1.1", "1.3-generic", "1.3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=IMAGES)
    ap.add_argument("--qualities", default="1,5,20,40,60,80,100")
    ap.add_argument("--out", type=Path, default=RESULTS / "side_info.csv")
    args = ap.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    rows = []
    for name in args.images.split(","):
        with Image.open(KODAK / f"{name}.png") as im:
            original = np.asarray(im.convert("RGB"))
        pixels = original.shape[0] * original.shape[1]
        for v in VARIANTS:
            for q in qualities:
                with variant(v):
                    data = bbimg.encode(original, quality=q)
                facts = codec.info(data)
                payloads = sum(facts["section_bytes"].values())
                plan = sum(n for tag, n in facts["section_bytes"].items() if tag in PLAN_TAGS)
                decoded = np.asarray(bbimg.decode(data).convert("RGB"))
                rows.append(dict(image=name, quality=q, variant=v, version=facts["version"], bytes=len(data),
                                 plan_bytes=plan, container_bytes=len(data) - payloads,
                                 side_bytes=plan + len(data) - payloads, bpp=8 * len(data) / pixels,
                                 psnr=round(psnr(original, decoded), 4)))
        print(name, "done", flush=True)
    write_csv(rows, args.out, ["image", "quality", "variant", "version", "bytes", "plan_bytes", "container_bytes",
                               "side_bytes", "bpp", "psnr"])

    print("mean bytes per image: plan and skip sections (all side information incl. container) / file")
    print("quality " + " ".join(f"{v:>24s}" for v in VARIANTS))
    for q in qualities:
        cells = []
        for v in VARIANTS:
            sel = [r for r in rows if r["variant"] == v and r["quality"] == q]
            cells.append(f"{np.mean([r['plan_bytes'] for r in sel]):6.1f} ({np.mean([r['side_bytes'] for r in sel]):5.1f})"
                         f" / {np.mean([r['bytes'] for r in sel]):7.0f}")
        print(f"{q:7d} " + " ".join(f"{c:>24s}" for c in cells))

    def curve(v, image):
        pts = sorted((r["bpp"], r["psnr"]) for r in rows if r["variant"] == v and r["image"] == image)
        return [p[0] for p in pts], [p[1] for p in pts]

    images = args.images.split(",")
    print("BD-rate (PSNR) against 1.1, per image and mean; negative = fewer bits:")
    for v in VARIANTS[1:]:
        per = [bd_rate(*curve("1.1", im), *curve(v, im)) for im in images]
        print(f"  {v:12s} " + " ".join(f"{x:+6.2f}%" for x in per) + f"   mean {np.nanmean(per):+.3f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
