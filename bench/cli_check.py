"""Check a bbimg row of rd_kodak.csv against an independent encode / decode through the real CLI.

    python bench/cli_check.py [--csv bench/results/rd_kodak.csv] [--image kodim01] [--quality 55]
                              [--all] [--out bench/results/cli_check.csv]

For each chosen (image, quality) row with codec=bbimg it runs, as separate processes,

    bbimg encode KODAK/IMAGE.png TMP/IMAGE-qQ.bbi -q Q [--model M] --quiet
    bbimg decode TMP/IMAGE-qQ.bbi TMP/IMAGE-qQ.png --quiet

(the installed ``bbimg`` console script; ``--bbimg "python -m cli.main"`` or any other command
line instead), then measures bpp from the .bbi file's size over the image's pixels and PSNR /
MS-SSIM of the decoded PNG against the original, with the same functions as bench/rd.py
(``common.psnr``, ``common.ms_ssim``: PSNR over R, G, B of the 8-bit output, pytorch-msssim's
linear MS-SSIM). A row passes when |ΔPSNR| <= 0.15 dB and |Δbpp| <= 2% of the CSV's bpp (the
acceptance limits of the benchmark issue; --psnr-tol / --bpp-tol change them); MS-SSIM is
reported, not judged.

Default row: the first image in the CSV at the quality closest to 55 among its bbimg rows (a
mid-range point); --image / --quality pick another, --all checks every bbimg row (slow: one
encode and decode each). Writes one line per checked row to --out
(image,quality,csv_bpp,cli_bpp,bpp_diff_pct,csv_psnr,cli_psnr,psnr_diff_db,csv_ms_ssim,cli_ms_ssim,
ms_ssim_diff,bytes,encode_s,decode_s,pass) and exits 1 when any row fails.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, RESULTS, ms_ssim, psnr, write_csv  # noqa: E402

COLUMNS = ("image", "quality", "csv_bpp", "cli_bpp", "bpp_diff_pct", "csv_psnr", "cli_psnr", "psnr_diff_db",
           "csv_ms_ssim", "cli_ms_ssim", "ms_ssim_diff", "bytes", "encode_s", "decode_s", "pass")


def bbimg_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["codec"] == "bbimg"]
    if not rows:
        raise SystemExit(f"{path}: no rows with codec=bbimg")
    return rows


def pick(rows: list[dict], image: str | None, quality: int | None, everything: bool) -> list[dict]:
    if everything:
        chosen = [r for r in rows if (image is None or r["image"] == image)
                  and (quality is None or int(r["param"]) == quality)]
    else:
        image = image or sorted({r["image"] for r in rows})[0]
        of_image = [r for r in rows if r["image"] == image]
        if not of_image:
            raise SystemExit(f"no bbimg row for image {image!r}; the CSV has {sorted({r['image'] for r in rows})}")
        if quality is None:
            quality = min((int(r["param"]) for r in of_image), key=lambda q: (abs(q - 55), q))
        chosen = [r for r in of_image if int(r["param"]) == quality]
    if not chosen:
        raise SystemExit(f"no bbimg row for image {image!r} at quality {quality}; the CSV has qualities "
                         f"{sorted({int(r['param']) for r in rows})}")
    return chosen


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed with status {proc.returncode}:\n{proc.stderr.strip()}")
    return time.perf_counter() - start


def check(row: dict, bbimg: list[str], kodak: Path, tmp: Path, psnr_tol: float, bpp_tol: float,
          model: str | None = None) -> dict:
    from PIL import Image

    name, q = row["image"], int(row["param"])
    src = kodak / f"{name}.png"
    if not src.exists():
        raise SystemExit(f"{src} not found (--kodak sets the folder)")
    bbi, png = tmp / f"{name}-q{q}.bbi", tmp / f"{name}-q{q}.png"
    extra = ["--model", model] if model else []
    encode_s = run([*bbimg, "encode", str(src), str(bbi), "-q", str(q), *extra, "--quiet"])
    decode_s = run([*bbimg, "decode", str(bbi), str(png), "--quiet"])
    original = np.asarray(Image.open(src).convert("RGB"))
    decoded = np.asarray(Image.open(png).convert("RGB"))
    size = bbi.stat().st_size
    cli = dict(bpp=size * 8 / (original.shape[0] * original.shape[1]), psnr=psnr(original, decoded),
               ms_ssim=ms_ssim(original, decoded))
    ref = {k: float(row[k]) for k in ("bpp", "psnr", "ms_ssim")}
    bpp_diff = (cli["bpp"] - ref["bpp"]) / ref["bpp"] * 100
    psnr_diff = cli["psnr"] - ref["psnr"]
    ok = abs(bpp_diff) <= bpp_tol and abs(psnr_diff) <= psnr_tol
    return dict(image=name, quality=q, csv_bpp=ref["bpp"], cli_bpp=cli["bpp"], bpp_diff_pct=bpp_diff,
                csv_psnr=ref["psnr"], cli_psnr=cli["psnr"], psnr_diff_db=psnr_diff, csv_ms_ssim=ref["ms_ssim"],
                cli_ms_ssim=cli["ms_ssim"], ms_ssim_diff=cli["ms_ssim"] - ref["ms_ssim"], bytes=size,
                encode_s=encode_s, decode_s=decode_s, **{"pass": ok})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=RESULTS / "rd_kodak.csv", help="rd.py's output")
    parser.add_argument("--image", default=None, help="Kodak image stem, e.g. kodim01 (default: the CSV's first)")
    parser.add_argument("--quality", type=int, default=None, help="bbimg -q of the row (default: closest to 55)")
    parser.add_argument("--all", action="store_true", help="check every bbimg row (of --image / --quality if given)")
    parser.add_argument("--kodak", type=Path, default=KODAK, help="folder of the Kodak PNGs")
    parser.add_argument("--model", default=None, help="bbimg model, when rd.py ran with --model")
    parser.add_argument("--bbimg", default=None,
                        help="command line of the CLI (default: the bbimg executable on PATH)")
    parser.add_argument("--psnr-tol", type=float, default=0.15, help="dB (default 0.15)")
    parser.add_argument("--bpp-tol", type=float, default=2.0, help="percent of the CSV's bpp (default 2)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the .bbi and .png files in this folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_check.csv")
    args = parser.parse_args(argv)

    if args.bbimg:
        bbimg = shlex.split(args.bbimg)
    elif (exe := shutil.which("bbimg")) is not None:
        bbimg = [exe]
    else:
        raise SystemExit("no bbimg executable on PATH (pip install .), or give --bbimg 'python -m cli.main'")
    chosen = pick(bbimg_rows(args.csv), args.image, args.quality, args.all)
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = args.keep or Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        for row in chosen:
            r = check(row, bbimg, args.kodak, tmp, args.psnr_tol, args.bpp_tol, args.model)
            results.append(r)
            print(f"{r['image']} q={r['quality']}: bpp {r['csv_bpp']:.4f} (csv) vs {r['cli_bpp']:.4f} (cli), "
                  f"{r['bpp_diff_pct']:+.2f}%; PSNR {r['csv_psnr']:.3f} vs {r['cli_psnr']:.3f} dB, "
                  f"{r['psnr_diff_db']:+.3f} dB; MS-SSIM {r['csv_ms_ssim']:.4f} vs {r['cli_ms_ssim']:.4f}; "
                  f"encode {r['encode_s']:.1f} s, decode {r['decode_s']:.1f} s: "
                  f"{'PASS' if r['pass'] else 'FAIL'}", flush=True)
    write_csv(results, args.out, COLUMNS)
    failed = [r for r in results if not r["pass"]]
    print(f"\n{len(results) - len(failed)}/{len(results)} rows within {args.psnr_tol} dB and {args.bpp_tol}% bpp "
          f"of {args.csv} ({' '.join(bbimg)}); wrote {args.out}")
    if any(math.isnan(r["cli_ms_ssim"]) for r in results):
        print("note: MS-SSIM is NaN without pytorch-msssim (pip install '.[bench]')", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
