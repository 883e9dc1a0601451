"""Fit a model's plan-unit table (bbimg.rec.plan_prior) on training images and write
bbimg/rec/plan_prior_data.py.

    python tools/fit_plan_prior.py [--model bbimg-hvae-v5] [--every 7] [--max-side 1024] [--samples F.json]

Codes every ``--every``-th image of /work/shared/data/train (sorted; never the Kodak evaluation
set) at each anchor quality with the shipped coder settings and no table, reads back the units of
both block plans, and fits :func:`bbimg.rec.plan_prior.fit`. Tables of other models already in
the data file are kept; a model's existing table is only replaced with ``--replace`` (files coded
with the old table would no longer decode). ``--samples``: keep the units in a JSON file and reuse
them when it exists (refitting without coding again).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bbimg import codec  # noqa: E402
from bbimg.image import prepare  # noqa: E402
from bbimg.latent_coder import Y_LEVEL, Z_BLOCK_RATIO_GAIN, Z_LEVEL, Gaussian, LatentCoder, plan_tags  # noqa: E402
from bbimg.model_files import DEFAULT_MODEL  # noqa: E402
from bbimg.rec import DEFAULT_KAPPA, plan_prior, prior_skip  # noqa: E402
from bbimg.rec.channel_plan import DEFAULT_BLOCK_RATIO, read_units  # noqa: E402
from bbimg.transforms import load_transforms  # noqa: E402

TRAIN = ROOT.parent / "shared" / "data" / "train"
DATA = ROOT / "bbimg" / "rec" / "plan_prior_data.py"


def units_of(pixels: np.ndarray, tr, q: int) -> dict:
    """Plan units of both levels as the encoder makes them without a table."""
    t = codec.quality_to_t(q)
    y_mean, y_scale = tr.analysis_pixels(pixels, t)
    z_mean, z_scale = tr.hyper(y_mean, t)
    rows, cols = z_mean.shape[2:]
    z_coder = LatentCoder(Z_LEVEL, 0, DEFAULT_KAPPA, block_ratio=DEFAULT_BLOCK_RATIO * Z_BLOCK_RATIO_GAIN)
    z = z_coder.compress(Gaussian(z_mean, z_scale), Gaussian(*tr.z_prior(t, rows, cols)))
    y_coder = LatentCoder(Y_LEVEL, 0, DEFAULT_KAPPA, block_ratio=DEFAULT_BLOCK_RATIO,
                          skip_ratio=prior_skip.DEFAULT_SKIP_RATIO)
    y = y_coder.compress(Gaussian(y_mean, y_scale), Gaussian(*tr.y_prior(z.sample, t)), size_only=True)
    out = {}
    for level, coded, channels, head in ((Z_LEVEL, z, z_mean.shape[1], ()),
                                         (Y_LEVEL, y, y_mean.shape[1],
                                          (prior_skip.SKIP_CODES, prior_skip.RATIO_CODES))):
        section = next(s for s in coded.sections if s.tag == plan_tags(level)[0])
        out[level.tag] = [int(u) for u in read_units(section.payload, channels, DEFAULT_KAPPA, None, head)[1]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--every", type=int, default=7)
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--replace", action="store_true")
    ap.add_argument("--samples", type=Path)
    args = ap.parse_args()
    files = sorted(p for p in TRAIN.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:: args.every]
    samples, start = [], time.time()
    sha = load_transforms(args.model, "cpu", 64, 64).sha256
    if args.samples and args.samples.exists():
        cached = json.loads(args.samples.read_text())
        if cached["weights_sha256"] != sha.hex():
            raise SystemExit(f"{args.samples} holds units of other weights")
        samples, files = cached["samples"], []
    for i, path in enumerate(files):
        with Image.open(path) as im:
            im.load()
            if max(im.size) > args.max_side:
                im = im.crop((0, 0, min(im.size[0], args.max_side), min(im.size[1], args.max_side)))
            prep = prepare(im)
        h, w = prep.pixels.shape[:2]
        tr = load_transforms(args.model, "cpu", h, w)
        for q in plan_prior.ANCHOR_QUALITIES:
            samples.append(dict(image=path.name, quality=q, units=units_of(prep.pixels, tr, q)))
        print(f"{i + 1}/{len(files)} {path.name} {time.time() - start:.0f} s", flush=True)
    if args.samples and files:
        args.samples.write_text(json.dumps(dict(weights_sha256=sha.hex(), samples=samples)))
    prior = plan_prior.fit(samples, args.model, sha.hex(), DEFAULT_KAPPA)
    from bbimg.rec.plan_prior_data import PRIORS

    kept = [p for p in plan_prior._load() if p.weights_sha256 != prior.weights_sha256]
    if len(kept) != len(PRIORS) and not args.replace:
        raise SystemExit(f"{args.model} already has a table (files coded with it need it): pass --replace")
    DATA.write_text(plan_prior.to_source(kept + [prior]))
    print(f"wrote {DATA}: {args.model} table id {prior.prior_id} from {prior.images} images")


if __name__ == "__main__":
    main()
