"""The model's ideal rate-distortion on Kodak (rate = KL bits, no coder), beside JPEG and WebP.

    python bench/ideal_rd.py [--images N] [--model NAME] [--weights FILE]

For each quality: bpp = KL(q||p) bits / original pixels (padding included), quality of the
reconstruction decoded from an exact posterior sample (`bbimg-ideal`) and from the posterior mean
(`bbimg-ideal-mean`). JPEG and WebP (method 6) are measured in the same run through Pillow, bpp from
real file bytes. Writes bench/results/ideal_rd.csv (codec,param,image,bpp,psnr,ms_ssim) and prints
BD-rates against WebP and JPEG.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, average_curve, bd_rate, kodak_images, ms_ssim, pillow_codec, psnr, write_csv  # noqa: E402

from bbimg.models import DEFAULT_MODEL, load_model, pad_to_multiple  # noqa: E402

QUALITIES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
JPEG_Q = [5, 10, 20, 30, 50, 70, 85, 95]
WEBP_Q = [2, 10, 25, 45, 65, 80, 90, 97]


@torch.no_grad()
def ideal_points(model, image: np.ndarray, t: float, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """(ideal bpp, sample reconstruction, mean reconstruction) for one image at quality t."""
    h, w = image.shape[:2]
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    xp = pad_to_multiple(x, model.cfg.stride)
    fa, fs, fha, fhs, fz = model.films(torch.tensor([t]))
    qy = model.encode_y(xp, fa)
    qz = model.encode_z(qy.mean, fha)
    torch.manual_seed(seed)
    z = qz.sample()
    from bbimg.models import gaussian_kl_bits
    kl = gaussian_kl_bits(qz, model.prior_z(fz, z.shape)).sum() + gaussian_kl_bits(qy, model.prior_y(z, fhs)).sum()

    def to_image(y):
        out = model.decode(y, fs)[0, :, :h, :w].clamp(0, 1) * 255
        return out.round().byte().permute(1, 2, 0).numpy()

    return float(kl) / (h * w), to_image(qy.sample()), to_image(qy.mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="use the first N Kodak images")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--weights", type=Path, default=None, help="weights file instead of a shipped model")
    parser.add_argument("--out", type=Path, default=RESULTS / "ideal_rd.csv")
    args = parser.parse_args()

    info, model = load_model(args.model, path=args.weights)
    images = kodak_images(args.images)
    rows = []
    start = time.time()
    for name, image in images:
        for t in QUALITIES:
            bpp, rec_sample, rec_mean = ideal_points(model, image, t)
            rows.append(dict(codec="bbimg-ideal", param=t, image=name, bpp=bpp, psnr=psnr(image, rec_sample),
                             ms_ssim=ms_ssim(image, rec_sample)))
            rows.append(dict(codec="bbimg-ideal-mean", param=t, image=name, bpp=bpp,
                             psnr=psnr(image, rec_mean), ms_ssim=ms_ssim(image, rec_mean)))
        for fmt, codec, qs in (("JPEG", "jpeg", JPEG_Q), ("WEBP", "webp", WEBP_Q)):
            for q in qs:
                size, dec = pillow_codec(image, fmt, q)
                rows.append(dict(codec=codec, param=q, image=name, bpp=size * 8 / (image.shape[0] * image.shape[1]),
                                 psnr=psnr(image, dec), ms_ssim=ms_ssim(image, dec)))
        print(f"{name} done ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    write_csv(rows, args.out)
    print(f"model {info.name} (step {info.step}), {len(images)} images -> {args.out}")
    print(f"{'codec':18s} " + " ".join(f"{'bpp':>6s} {'psnr':>6s}" for _ in range(1)))
    for codec in ("bbimg-ideal", "bbimg-ideal-mean", "webp", "jpeg"):
        r, d = average_curve(rows, codec)
        print(f"{codec:18s} " + "  ".join(f"{a:.3f}/{b:.2f}" for a, b in zip(r, d)))
    for codec in ("bbimg-ideal", "bbimg-ideal-mean"):
        for ref in ("webp", "jpeg"):
            for metric in ("psnr", "ms_ssim"):
                rr, dr = average_curve(rows, ref, metric)
                rt, dt = average_curve(rows, codec, metric)
                print(f"BD-rate {codec} vs {ref} ({metric}): {bd_rate(rr, dr, rt, dt):+.1f}%")


if __name__ == "__main__":
    main()
