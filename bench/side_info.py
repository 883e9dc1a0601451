"""Side information of a file: block plans, skip information and container, formats 2.0 and 1.3 against 1.1.

    python bench/side_info.py [--images kodim01,...] [--qualities 1,5,20,40,60,80,100] [--variants 2.0,...]

Encodes Kodak images through ``bbimg.encode`` (real files) and decodes them with ``bbimg.decode``,
once per variant:

* ``1.1``: the coding of format 1.1 (``xPLN``: symbols and exponents under one adaptive model over
  96 symbols; ``YSKP``: a rank-cut skip symbol per y channel);
* ``1.3-generic``: format 1.3 without the model's plan-unit table (``xPL2``: one unit per channel
  under an adaptive model; the y skip mask derived from the plan and sigma_p, one code per image);
* ``1.3``: with the model's table (bbimg.rec.plan_prior), in the 1.x container layout;
* ``2.0``: the default: the plans of ``1.3`` in the 2.0 container (varint header, 8-byte weights
  hash, no model name or header CRC, sections framed by tag + varint length).

The 1.x variants are written in the 1.x layout (``codec.WRITE_VERSION``). Rows of the variants,
images and qualities run replace those in the CSV; other rows are kept. Writes bench/results/side_info.csv (image, quality, variant, bytes, plan_bytes, container_bytes,
side_bytes, bpp, psnr; ``plan_bytes`` = the plan and skip sections' payloads, ``container_bytes`` =
header, section table and CRCs, ``side_bytes`` = their sum: everything that is not a candidate
index; what ``bbimg info --json`` reports as ``side_bytes``) and prints the mean per quality, the
mean and max side_bytes per quality, and, when 1.1 ran too, each other variant's BD-rate (PSNR,
per image then averaged) against 1.1: negative = fewer bits for the same quality.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
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


@contextlib.contextmanager
def variant(name: str):
    """A context in which bbimg.encode writes the variant's files."""
    with contextlib.ExitStack() as stack:
        if name != "2.0":
            stack.enter_context(mock.patch.object(codec, "WRITE_VERSION", (1, 1)))  # the 1.x layout, lowest minor
        if name == "1.1":
            stack.enter_context(mock.patch.object(codec, "LatentCoder", functools.partial(LatentCoder, legacy=True)))
        if name == "1.3-generic":
            stack.enter_context(mock.patch.object(plan_prior, "predictions", lambda *args: {}))
        yield


VARIANTS = ("1.1", "1.3-generic", "1.3", "2.0")
FIELDS = ["image", "quality", "variant", "version", "bytes", "plan_bytes", "container_bytes", "side_bytes", "bpp",
          "psnr"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=IMAGES)
    ap.add_argument("--qualities", default="1,5,20,40,60,80,100")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS / "side_info.csv")
    args = ap.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)} (known: {', '.join(VARIANTS)})")
    rows = []
    for name in args.images.split(","):
        with Image.open(KODAK / f"{name}.png") as im:
            original = np.asarray(im.convert("RGB"))
        pixels = original.shape[0] * original.shape[1]
        for v in variants:
            for q in qualities:
                with variant(v):
                    data = bbimg.encode(original, quality=q)
                facts = codec.info(data)
                payloads = sum(facts["section_bytes"].values())
                plan = sum(n for tag, n in facts["section_bytes"].items() if tag in PLAN_TAGS)
                assert facts["side_bytes"] == plan + len(data) - payloads, facts
                decoded = np.asarray(bbimg.decode(data).convert("RGB"))
                rows.append(dict(image=name, quality=q, variant=v, version=facts["version"], bytes=len(data),
                                 plan_bytes=plan, container_bytes=len(data) - payloads,
                                 side_bytes=facts["side_bytes"], bpp=8 * len(data) / pixels,
                                 psnr=round(psnr(original, decoded), 4)))
        print(name, "done", flush=True)
    ran = {(r["image"], str(r["quality"]), r["variant"]) for r in rows}
    kept = []
    if args.out.exists():
        with open(args.out, newline="") as f:
            kept = [r for r in csv.DictReader(f) if (r["image"], r["quality"], r["variant"]) not in ran]
    order = {v: i for i, v in enumerate(VARIANTS)}
    write_csv(sorted(kept + rows, key=lambda r: (r["image"], order.get(r["variant"], 99), int(r["quality"]))),
              args.out, FIELDS)

    print("side_bytes per quality (header, framing, CRCs, plans): mean / max over the images")
    print("quality " + " ".join(f"{v:>16s}" for v in variants))
    for q in qualities:
        sel = [[r["side_bytes"] for r in rows if r["variant"] == v and r["quality"] == q] for v in variants]
        print(f"{q:7d} " + " ".join(f"{np.mean(s):8.1f} / {max(s):5d}" for s in sel))

    print("mean bytes per image: plan and skip sections (all side information incl. container) / file")
    print("quality " + " ".join(f"{v:>24s}" for v in variants))
    for q in qualities:
        cells = []
        for v in variants:
            sel = [r for r in rows if r["variant"] == v and r["quality"] == q]
            cells.append(f"{np.mean([r['plan_bytes'] for r in sel]):6.1f} ({np.mean([r['side_bytes'] for r in sel]):5.1f})"
                         f" / {np.mean([r['bytes'] for r in sel]):7.0f}")
        print(f"{q:7d} " + " ".join(f"{c:>24s}" for c in cells))

    def curve(v, image):
        pts = sorted((r["bpp"], r["psnr"]) for r in rows if r["variant"] == v and r["image"] == image)
        return [p[0] for p in pts], [p[1] for p in pts]

    images = args.images.split(",")
    if "1.1" not in variants or len(qualities) < 4:
        print(f"wrote {args.out}")
        return
    print("BD-rate (PSNR) against 1.1, per image and mean; negative = fewer bits:")
    for v in variants:
        if v == "1.1":
            continue
        per = [bd_rate(*curve("1.1", im), *curve(v, im)) for im in images]
        print(f"  {v:12s} " + " ".join(f"{x:+6.2f}%" for x in per) + f"   mean {np.nanmean(per):+.3f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
