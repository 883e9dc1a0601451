"""Pack the training split (held-out images excluded, downscaled as `bbimg train` does) as JPEG q92
4:4:4 files small enough to travel with the repository to a lent GPU machine (~39 MiB for 788 images).

    python tools/gpu_burst/pack_data.py /work/shared/data/train .gpu/data
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from bbimg.training.data import load_image_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--quality", type=int, default=92)
    parser.add_argument("--downscale", type=int, default=2)
    args = parser.parse_args()
    images = load_image_set([args.data], downscale=args.downscale)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for i, im in enumerate(images.images):
        path = args.out / f"{i:04d}.jpg"
        Image.fromarray(im).save(path, "JPEG", quality=args.quality, subsampling=0)
        total += path.stat().st_size
    print(f"{len(images)} images, {total / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
