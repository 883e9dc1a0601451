"""Pack the training data (both splits, downscaled as `bbimg train` does) as JPEG q92 4:4:4 files small
enough to travel with the repository to a lent GPU machine (41 MiB for shared/data/train).

    python tools/gpu_burst/pack_data.py /work/shared/data/train .gpu/data
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bbimg.training.data import pack_image_set  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="+", help="folders of training images")
    parser.add_argument("out", type=Path)
    parser.add_argument("--quality", type=int, default=92)
    parser.add_argument("--downscale", type=int, default=2)
    args = parser.parse_args()
    counts = pack_image_set(args.data, args.out, downscale=args.downscale, quality=args.quality)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{counts['train']} training and {counts['validation']} held-out images, {size / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
