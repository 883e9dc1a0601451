"""Wall-clock time of the real command line, a new process per call, on Kodak images.

    python bench/cli_speed.py [--images N] [--quality Q] [--repeat R] [--tree LABEL=PATH ...]

For each image: ``bbimg encode [-q Q] IMG out.bbi`` and ``bbimg decode out.bbi out.png``, each run
``R`` times (the fastest counts: the machine is shared and noisy). ``bbimg`` is the console script
beside this Python (a pyenv shim in front of it adds a shell and a fork), and the package's
sources are byte-compiled first, as an installed package's are. In the same run, as the reference
a user would compare with, the same image goes through WebP (method 6, quality 75) in a fresh Python
process through Pillow, the same way (encode to a file, decode to PNG). Where the default model has
a fast synthesis, ``bbimg decode --fast`` is timed in the same repetitions (``fast_decode_s``). Writes
bench/results/cli_speed.csv (image,encode_s,decode_s,bpp,webp_encode_s,webp_decode_s,cpu[,fast_decode_s])
and prints the means and the ratios to the reference.

``--tree LABEL=PATH`` also runs the CLI from another source tree (a copy of the package with
``cli/`` as ``bbimg/cli``, on PYTHONPATH), interleaved with the installed one in every repetition
(A, B, A, B, ...), and writes bench/results/cli_speed_trees.csv (image, tree, encode_s, decode_s,
bpp, same_bytes: the file equals the reference tree's). With ``--no-installed`` only the given
trees run, the first being the reference (for a working copy in flux: compare snapshots).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, cpu_name, kodak_files, write_csv  # noqa: E402

WEBP_ENCODE = "import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2], 'WEBP', quality=75, method=6)"
WEBP_DECODE = "import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2])"


def timed(cmd: list[str], repeat: int, env: dict | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def bbimg_script() -> str:
    beside = Path(sys.executable).with_name("bbimg")
    return str(beside) if beside.is_file() else (shutil.which("bbimg") or sys.exit("bbimg is not on PATH (pip install -e .)"))


def tree_env(tree: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BBIMG_BACKEND", "BBIMG_MODEL_PATH")}
    if tree:
        env["PYTHONPATH"] = tree
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--quality", type=int, default=None, help="bbimg -q (default: bbimg's default)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="also time the CLI run from this source tree, interleaved")
    parser.add_argument("--no-installed", action="store_true",
                        help="only the --tree trees (the first one is the reference and fills cli_speed.csv)")
    args = parser.parse_args()
    bbimg = bbimg_script()
    root = Path(__file__).resolve().parents[1]
    trees = ([] if args.no_installed else [("installed", None)]) + [tuple(t.split("=", 1)) for t in args.tree]
    if not trees:
        sys.exit("--no-installed needs at least one --tree")
    ref = trees[0][0]
    dirs = [root / "bbimg", root / "cli"] + [Path(tree) / "bbimg" for _, tree in trees if tree]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, dirs)], check=True, stdout=subprocess.DEVNULL)
    from bbimg.model_files import DEFAULT_MODEL, find_weights
    from bbimg.runtime import fast_synthesis_path
    fast = fast_synthesis_path(DEFAULT_MODEL, find_weights(DEFAULT_MODEL)).is_file()
    rows, tree_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out_png = Path(tmp) / "a.png"
        out_webp, out_webp_png = Path(tmp) / "a.webp", Path(tmp) / "b.png"
        for path in kodak_files()[:args.images]:
            q = [] if args.quality is None else ["-q", str(args.quality)]
            best = {label: [float("inf"), float("inf")] for label, _ in trees}
            wbest = [float("inf"), float("inf")]
            fast_best = float("inf")
            for _ in range(args.repeat):  # interleaved: every tree once per repetition
                for label, tree in trees:
                    env = tree_env(tree)
                    bbi = Path(tmp) / f"{label}.bbi"
                    best[label][0] = min(best[label][0], timed([bbimg, "encode", *q, "--quiet", str(path), str(bbi)], 1, env))
                    best[label][1] = min(best[label][1], timed([bbimg, "decode", "--quiet", str(bbi), str(out_png)], 1, env))
                    if fast and label == ref:
                        fast_best = min(fast_best, timed([bbimg, "decode", "--fast", "--quiet", str(bbi), str(out_png)], 1, env))
                wbest[0] = min(wbest[0], timed([sys.executable, "-c", WEBP_ENCODE, str(path), str(out_webp)], 1))
                wbest[1] = min(wbest[1], timed([sys.executable, "-c", WEBP_DECODE, str(out_webp), str(out_webp_png)], 1))
            from PIL import Image
            with Image.open(path) as im:
                pixels = im.width * im.height
            files = {label: (Path(tmp) / f"{label}.bbi").read_bytes() for label, _ in trees}
            enc, dec = best[ref]
            bpp = len(files[ref]) * 8 / pixels
            rows.append(dict(image=path.stem, encode_s=round(enc, 3), decode_s=round(dec, 3), bpp=round(bpp, 4),
                             webp_encode_s=round(wbest[0], 3), webp_decode_s=round(wbest[1], 3), cpu=cpu_name()))
            if fast:
                rows[-1]["fast_decode_s"] = round(fast_best, 3)
            for label, _ in trees:
                tree_rows.append(dict(image=path.stem, tree=label, encode_s=round(best[label][0], 3),
                                      decode_s=round(best[label][1], 3),
                                      bpp=round(len(files[label]) * 8 / pixels, 4),
                                      same_bytes=files[label] == files[ref]))
            others = "".join(f"; {label}: {best[label][0]:.2f} / {best[label][1]:.2f} s" for label, _ in trees[1:])
            print(f"{path.stem}: encode {enc:.2f} s, decode {dec:.2f} s" + (f" (--fast {fast_best:.2f} s)" if fast else "")
                  + f", {bpp:.3f} bpp "
                  f"(WebP via Python: {wbest[0]:.2f} / {wbest[1]:.2f} s{others})", flush=True)
    write_csv(rows, RESULTS / "cli_speed.csv", list(rows[0]))
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in ("encode_s", "decode_s", "webp_encode_s", "webp_decode_s")}
    print(f"mean over {n} images: encode {mean['encode_s']:.2f} s (max {max(r['encode_s'] for r in rows):.2f}), "
          f"decode {mean['decode_s']:.2f} s (max {max(r['decode_s'] for r in rows):.2f}); "
          f"ratio to WebP through a Python process: encode {mean['encode_s'] / mean['webp_encode_s']:.1f}x, "
          f"decode {mean['decode_s'] / mean['webp_decode_s']:.1f}x")
    if fast:
        print(f"decode --fast: mean {sum(r['fast_decode_s'] for r in rows) / n:.2f} s "
              f"(max {max(r['fast_decode_s'] for r in rows):.2f})")
    if len(trees) > 1:
        write_csv(tree_rows, RESULTS / "cli_speed_trees.csv", list(tree_rows[0]))
        for label, _ in trees:
            mine = [r for r in tree_rows if r["tree"] == label]
            e, d = (sum(r[k] for r in mine) / n for k in ("encode_s", "decode_s"))
            print(f"{label}: mean encode {e:.3f} s, decode {d:.3f} s, same bytes as {ref}: "
                  f"{sum(r['same_bytes'] for r in mine)}/{n}")


if __name__ == "__main__":
    main()
