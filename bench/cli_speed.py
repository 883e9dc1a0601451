"""Wall-clock time of the real command line, a new process per call, on Kodak images.

    python bench/cli_speed.py [--images N] [--quality Q] [--repeat R]

For each image: ``bbimg encode [-q Q] IMG out.bbi`` and ``bbimg decode out.bbi out.png``, each run
``R`` times (the fastest counts: the machine is shared and noisy). In the same run, as the reference
a user would compare with, the same image goes through WebP (method 6, quality 75) in a fresh Python
process through Pillow, the same way (encode to a file, decode to PNG). Writes
bench/results/cli_speed.csv (image,encode_s,decode_s,bpp,webp_encode_s,webp_decode_s) and prints
the means and the ratios to the reference.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, kodak_files, write_csv  # noqa: E402

WEBP_ENCODE = "import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2], 'WEBP', quality=75, method=6)"
WEBP_DECODE = "import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2])"


def timed(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--quality", type=int, default=None, help="bbimg -q (default: bbimg's default)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    bbimg = shutil.which("bbimg") or sys.exit("bbimg is not on PATH (pip install -e .)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_bbi, out_png = Path(tmp) / "a.bbi", Path(tmp) / "a.png"
        out_webp, out_webp_png = Path(tmp) / "a.webp", Path(tmp) / "b.png"
        for path in kodak_files()[:args.images]:
            q = [] if args.quality is None else ["-q", str(args.quality)]
            enc = timed([bbimg, "encode", *q, "--quiet", str(path), str(out_bbi)], args.repeat)
            dec = timed([bbimg, "decode", str(out_bbi), str(out_png)], args.repeat)
            from PIL import Image
            with Image.open(path) as im:
                bpp = out_bbi.stat().st_size * 8 / (im.width * im.height)
            wenc = timed([sys.executable, "-c", WEBP_ENCODE, str(path), str(out_webp)], args.repeat)
            wdec = timed([sys.executable, "-c", WEBP_DECODE, str(out_webp), str(out_webp_png)], args.repeat)
            rows.append(dict(image=path.stem, encode_s=round(enc, 3), decode_s=round(dec, 3), bpp=round(bpp, 4),
                             webp_encode_s=round(wenc, 3), webp_decode_s=round(wdec, 3)))
            print(f"{path.stem}: encode {enc:.2f} s, decode {dec:.2f} s, {bpp:.3f} bpp "
                  f"(WebP via Python: {wenc:.2f} / {wdec:.2f} s)", flush=True)
    write_csv(rows, RESULTS / "cli_speed.csv", list(rows[0]))
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in ("encode_s", "decode_s", "webp_encode_s", "webp_decode_s")}
    print(f"mean over {n} images: encode {mean['encode_s']:.2f} s (max {max(r['encode_s'] for r in rows):.2f}), "
          f"decode {mean['decode_s']:.2f} s (max {max(r['decode_s'] for r in rows):.2f}); "
          f"ratio to WebP through a Python process: encode {mean['encode_s'] / mean['webp_encode_s']:.1f}x, "
          f"decode {mean['decode_s'] / mean['webp_decode_s']:.1f}x")


if __name__ == "__main__":
    main()
