"""How much quality a model's synthesis can give at all: the ceiling a higher rate cannot pass.

    python bench/synthesis_ceiling.py [--weights FILE ...] [--image kodim05] [--lambdas 0.008,0.08,0.64]

For each weights file (default: the shipped model) and lambda inside its range, the image decoded
from the posterior *mean* (no coder, no sample noise): what more bits could approach at best. Then
the latent optimised freely for MSE (Adam on g_s's input from the posterior mean at the highest
lambda, ``--steps``, on a ``--crop`` of the image; no rate at all): what g_s can draw from any
latent. Writes bench/results/synthesis_ceiling.csv (weights,step,image,measure,lam,psnr).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, RESULTS, write_csv  # noqa: E402

from bbimg.models import HierarchicalVAE, load_model  # noqa: E402
from bbimg.model_files import find_weights, DEFAULT_MODEL  # noqa: E402


def t_of(model: HierarchicalVAE, lam: float) -> float:
    cfg = model.cfg
    return math.log(lam / cfg.lambda_min) / math.log(cfg.lambda_max / cfg.lambda_min)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.clamp(0, 1) - b).pow(2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, nargs="*", default=None)
    ap.add_argument("--image", default="kodim05")
    ap.add_argument("--lambdas", default="0.008,0.032,0.08,0.16,0.32,0.64")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--crop", default="256,384", help="rows,cols of the top-left crop for the free latent")
    ap.add_argument("--out", type=Path, default=RESULTS / "synthesis_ceiling.csv")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.from_numpy(np.array(Image.open(KODAK / f"{args.image}.png").convert("RGB"))).permute(2, 0, 1)[None]
    x = x.float() / 255
    rows = []
    for path in args.weights or [find_weights(DEFAULT_MODEL)]:
        info, model = load_model(path.stem, path=path)
        step = info.step
        lams = [lam for lam in map(float, args.lambdas.split(","))
                if model.cfg.lambda_min <= lam <= model.cfg.lambda_max * (1 + 1e-6)]
        with torch.no_grad():
            for lam in lams:
                films = model.films(torch.tensor([t_of(model, lam)]))
                mean = model.encode_y(x, films.analysis).mean
                value = psnr(model.decode(mean, films.synthesis), x)
                rows.append(dict(weights=path.name, step=step, image=args.image, measure="posterior mean", lam=lam,
                                 psnr=value))
                print(f"{path.name} (step {step}) lambda {lam:g}: posterior mean {value:.2f} dB", flush=True)
        h, w = (int(v) for v in args.crop.split(","))
        crop = x[:, :, :h, :w]
        films = model.films(torch.tensor([t_of(model, lams[-1])]))
        with torch.no_grad():
            start = model.encode_y(crop, films.analysis).mean
        y = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=0.05)
        for i in range(args.steps + 1):
            out = model.decode(y, films.synthesis)
            if i in (0, args.steps):
                measure = "free latent, start" if i == 0 else f"free latent, {args.steps} Adam steps"
                rows.append(dict(weights=path.name, step=step, image=f"{args.image}[:{h},:{w}]", measure=measure,
                                 lam=lams[-1], psnr=psnr(out.detach(), crop)))
                print(f"{path.name}: {measure}: {rows[-1]['psnr']:.2f} dB", flush=True)
            loss = (out - crop).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    write_csv(rows, args.out, ("weights", "step", "image", "measure", "lam", "psnr"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
