"""Rate-distortion of bbimg on Kodak beside JPEG, WebP, JPEG 2000, AVIF (4:4:4, 4:2:0) and JPEG XL,
all measured in this run, and BD-rates against those and the published anchors.

    python bench/rd.py [--images N] [--qualities 1,10,25,...] [--codecs jpeg,webp,...] [--out-dir DIR]
                       [--also-models bbimg-hvae-v5,...]

bbimg goes through its public API (``bbimg.evaluate.evaluate``: ``bbimg.encode`` then
``bbimg.decode``), one row per image and ``-q`` value; bpp counts the real file bytes (headers
included) over the original pixels. ``bbimg-ideal`` is the model's own rate at the same qualities
(KL bits, no coder; ``ideal_rd.ideal_points``) with the image decoded from an exact posterior
sample: the gap between the two curves is what the REC coder costs. ``--also-models`` codes the same
images with other installed models (rows named after the model), compared like a reference codec. The reference codecs run in the
same process (``common.reference_codecs``; a codec whose library is missing is skipped with a note);
their bpp also counts real file bytes. PSNR is over R, G, B of the 8-bit output; MS-SSIM is
pytorch-msssim's linear MS-SSIM.

Writes to DIR (default bench/results):
  rd_kodak.csv    codec,param,image,bpp,psnr,ms_ssim (one row per codec, parameter and image)
  bd_rate.csv     BD-rate (%) of bbimg and bbimg-ideal against every in-run codec and the published
                  anchors (BPG 4:4:4, VTM, Ballé 2018 hyperprior, iREC 2020), over PSNR and over
                  MS-SSIM in dB (-10 log10(1 - MS-SSIM)); negative = bbimg needs fewer bits.
                  Curves are averaged per parameter over the images; each reference is fitted only
                  near the compared quality range (``common.local_points``).
  rd_kodak.png    PSNR and MS-SSIM (dB) against bpp, all curves
  bd_rate.md      the same table in Markdown (as printed at the end of the run)
  bd_rate_ranges.csv  test,reference,bpp_lo,bpp_hi,psnr_lo,psnr_hi,bd_rate_psnr: BD-rate over the
                  PSNR interval the tested curve spans between two rates (0.1-1 and 0.1-2 bpp), against
                  WebP, JPEG XL, AVIF 4:4:4 and the --also-models
  rd_cache.jsonl  every measured row, keyed by codec, parameter, image and the codec's identity
                  (bbimg: model name, weights hash and a hash of the bbimg and csrc sources, so new
                  weights or a changed coder are measured afresh; others: library version): a rerun
                  only measures what is missing, so an interrupted run resumes. --fresh starts over.

Published anchors average all 24 Kodak images: with --images < 24 the BD-rates against them
compare different image sets and are only indicative.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (RESULTS, average_curve, bd_rate, kodak_files, local_points, ms_ssim, psnr,  # noqa: E402
                    quality_at_rates, read_anchors, reference_codecs, write_csv)

COLUMNS = ("codec", "param", "image", "bpp", "psnr", "ms_ssim")
DEFAULT_QUALITIES = (1, 10, 25, 40, 55, 70, 85, 100)
ANCHORS = {  # published curve -> label
    "bpg_444_x265_ycbcr": "BPG 4:4:4 (published)",
    "vtm": "VTM intra (published)",
    "compressai-bmshj2018-hyperprior_mse_cpu": "Ballé 2018 hyperprior (published)",
    "irec2020-actual": "iREC 2020, actual (published)",
    "irec2020-ideal-kl": "iREC 2020, ideal KL (published)",
}
TESTS = ("bbimg", "bbimg-ideal")
BPP_RANGES = ((0.1, 1.0), (0.1, 2.0))
RANGE_REFERENCES = ("webp", "jpegxl", "avif-444")


def ms_ssim_db(x):
    x = np.asarray(x, float)
    return -10 * np.log10(np.maximum(1 - x, 1e-12))


class Cache:
    """Measured rows on disk, one JSON object a line, appended as soon as each is measured."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.rows: dict[str, dict] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and path.exists():
            path.unlink()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.rows[entry["key"]] = entry["row"]
                except (ValueError, KeyError):
                    continue  # a line cut short by an interrupted run

    @staticmethod
    def key(codec: str, param, image: str, identity: str) -> str:
        return json.dumps([codec, str(param), image, identity])

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict) -> None:
        self.rows[key] = row
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(key=key, row=row)) + "\n")


def code_hash() -> str:
    """Hash of the bbimg package's Python sources and of the engine's C++ / CUDA sources (the hash
    the compiled core carries, which bbimg.rec checks against csrc/ at import): part of the cache
    key of bbimg rows, so that a changed coder is re-measured."""
    import bbimg
    from bbimg import rec

    digest = hashlib.sha256(rec.core_info()["source_hash"].encode())
    for f in sorted(Path(bbimg.__file__).resolve().parent.rglob("*.py")):
        if "__pycache__" not in f.parts:
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


def reference_rows(cache: Cache, c, name: str, image: np.ndarray) -> list[tuple[dict, bool]]:
    """(row, newly measured) for each parameter of reference codec ``c`` on one image, cached by
    the codec's library version."""
    out = []
    for p in c.params:
        key = Cache.key(c.name, p, name, c.library)
        row, new = cache.get(key), False
        if row is None:
            size, dec = c.roundtrip(image, p)
            row = dict(codec=c.name, param=p, image=name, bpp=size * 8 / (image.shape[0] * image.shape[1]),
                       psnr=psnr(image, dec), ms_ssim=ms_ssim(image, dec))
            cache.put(key, row)
            new = True
        out.append((row, new))
    return out


def measure(args) -> tuple[list[dict], list[str]]:
    import torch
    from PIL import Image

    from bbimg.codec import quality_to_t
    from bbimg.evaluate import evaluate
    from bbimg.models import DEFAULT_MODEL, load_model
    from ideal_rd import ideal_points

    model_name = args.model or DEFAULT_MODEL
    info, model = load_model(model_name)
    identity = f"{info.name}:{info.sha256.hex()[:16]}:code-{code_hash()}"
    only = set(args.codecs.split(",")) if args.codecs else None
    codecs, notes = reference_codecs(only)
    cache = Cache(args.out_dir / "rd_cache.jsonl", args.fresh)
    files = kodak_files(args.images)
    print(f"bbimg model {identity} (step {info.step}); qualities {args.qualities}; {len(files)} images",
          file=sys.stderr)
    for c in codecs:
        print(f"  {c.name}: {c.library}", file=sys.stderr)
    for note in notes:
        print(f"  note: {note}", file=sys.stderr)

    also = []
    for name in args.also_models:
        other, _ = load_model(name)
        also.append((name, f"{other.name}:{other.sha256.hex()[:16]}:code-{code_hash()}"))
    rows: list[dict] = []
    start = time.time()
    for path in files:
        image = np.asarray(Image.open(path).convert("RGB"))
        name = path.stem
        fresh = 0
        t_image = time.time()
        if not args.skip_bbimg:
            for q in args.qualities:
                key = Cache.key("bbimg", q, name, identity)
                if (row := cache.get(key)) is None:
                    (r,) = evaluate([path], [q], model=model_name)
                    row = {k: r[k] for k in COLUMNS}
                    cache.put(key, row)
                    fresh += 1
                rows.append(row)
                key = Cache.key("bbimg-ideal", q, name, identity)
                if (row := cache.get(key)) is None:
                    with torch.no_grad():
                        bpp, sample, _ = ideal_points(model, image, quality_to_t(q))
                    row = dict(codec="bbimg-ideal", param=q, image=name, bpp=bpp, psnr=psnr(image, sample),
                               ms_ssim=ms_ssim(image, sample))
                    cache.put(key, row)
                    fresh += 1
                rows.append(row)
            for other, other_identity in also:
                for q in args.qualities:
                    key = Cache.key(other, q, name, other_identity)
                    if (row := cache.get(key)) is None:
                        (r,) = evaluate([path], [q], model=other)
                        row = {**{k: r[k] for k in COLUMNS}, "codec": other}
                        cache.put(key, row)
                        fresh += 1
                    rows.append(row)
        t_bbimg = time.time() - t_image
        for c in codecs:
            measured = reference_rows(cache, c, name, image)
            fresh += sum(new for _, new in measured)
            rows.extend(row for row, _ in measured)
        print(f"{name}: {fresh} new measurements, bbimg {t_bbimg:.0f} s, others {time.time() - t_image - t_bbimg:.0f} s "
              f"({time.time() - start:.0f} s in all)", file=sys.stderr, flush=True)
    return rows, [c.name for c in codecs] + [name for name, _ in also]


def curves(rows: list[dict], codecs: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """codec -> bpp, psnr, ms_ssim_db arrays of the per-parameter mean curve (in-run and published)."""
    out = {}
    for codec in [*TESTS, *codecs]:
        if not any(r["codec"] == codec for r in rows):
            continue
        bpp, p = average_curve(rows, codec, "psnr")
        _, m = average_curve(rows, codec, "ms_ssim")  # same order: sorted by mean bpp
        out[codec] = dict(bpp=bpp, psnr=p, ms_ssim_db=ms_ssim_db(m))
    anchors = read_anchors()
    for codec in ANCHORS:
        if codec in anchors:
            pts = sorted(anchors[codec], key=lambda r: r["bpp"])
            out[codec] = dict(bpp=np.array([r["bpp"] for r in pts]), psnr=np.array([r["psnr"] for r in pts]),
                              ms_ssim_db=ms_ssim_db([r["ms_ssim"] for r in pts]))
    return out


def bd_table(cv: dict, codecs: list[str]) -> list[dict]:
    table = []
    for test in TESTS:
        if test not in cv:
            continue
        for ref in [*codecs, *ANCHORS]:
            if ref not in cv:
                continue
            row = dict(test=test, reference=ref, source="published" if ref in ANCHORS else "this run")
            for metric in ("psnr", "ms_ssim_db"):
                rt, dt = cv[test]["bpp"], cv[test][metric]
                rr, dr = cv[ref]["bpp"], cv[ref][metric]
                ok = np.isfinite(dr) & np.isfinite(rr)
                value, overlap = float("nan"), 0.0
                if ok.sum() >= 4 and np.isfinite(dt).all() and len(dt) >= 4:
                    rr, dr = local_points(rr[ok], dr[ok], float(np.min(dt)), float(np.max(dt)))
                    value = bd_rate(rr, dr, rt, dt)
                    overlap = max(0.0, min(dr.max(), dt.max()) - max(dr.min(), dt.min()))
                name = "psnr" if metric == "psnr" else "ms_ssim"
                row[f"bd_rate_{name}"] = value
                row[f"{name}_overlap_db"] = overlap  # width of the quality interval both curves cover
            table.append(row)
    return table


def range_table(cv: dict, codecs: list[str], also: list[str]) -> list[dict]:
    """BD-rate (PSNR) of bbimg over the quality interval its curve spans between two rates."""
    table = []
    for test in TESTS:
        if test not in cv:
            continue
        rt, dt = cv[test]["bpp"], cv[test]["psnr"]
        for ref in [*RANGE_REFERENCES, *also]:
            if ref not in cv or ref not in codecs:
                continue
            for bpp_lo, bpp_hi in BPP_RANGES:
                lo, hi = quality_at_rates(rt, dt, bpp_lo, bpp_hi)
                rr, dr = local_points(cv[ref]["bpp"], cv[ref]["psnr"], lo, hi)
                table.append(dict(test=test, reference=ref, bpp_lo=bpp_lo, bpp_hi=bpp_hi, psnr_lo=round(lo, 3),
                                  psnr_hi=round(hi, 3), bd_rate_psnr=bd_rate(rr, dr, rt, dt, (lo, hi))))
    return table


def markdown(table: list[dict]) -> str:
    def fmt(v, overlap):
        if v is None or math.isnan(v):
            return "n/a"
        return f"{v:+.1f}%" + (f" ({overlap:.1f} dB)" if overlap < 2 else "")

    refs = list(dict.fromkeys(r["reference"] for r in table))
    lines = ["| reference | bbimg (PSNR) | bbimg (MS-SSIM) | bbimg-ideal (PSNR) | bbimg-ideal (MS-SSIM) |",
             "|---|---|---|---|---|"]
    for ref in refs:
        cells = []
        for test in TESTS:
            r = next((r for r in table if r["reference"] == ref and r["test"] == test), None)
            cells += [fmt(r and r["bd_rate_psnr"], r and r["psnr_overlap_db"]),
                      fmt(r and r["bd_rate_ms_ssim"], r and r["ms_ssim_overlap_db"])]
        lines.append(f"| {ANCHORS.get(ref, ref)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(cv: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # up to 1.6 bpp, or a little past bbimg's highest rate when it goes further
    xmax = max([1.6] + [1.05 * float(np.max(cv[t]["bpp"])) for t in TESTS if t in cv])
    fig, axes = plt.subplots(1, 2, figsize=(17, 6.5))
    tab20 = plt.get_cmap("tab20").colors
    colours = tab20[::2] + tab20[1::2]  # the 10 strong colours, then their light variants: 20 distinct
    style = {}
    k = 0
    for codec in cv:
        if codec == "bbimg":
            style[codec] = dict(color="black", lw=2.4, marker="o", ms=5, label="bbimg")
        elif codec == "bbimg-ideal":
            style[codec] = dict(color="black", lw=1.6, ls=":", marker="o", ms=3, mfc="none",
                                label="bbimg ideal (KL rate)")
        else:
            published = codec in ANCHORS
            style[codec] = dict(color=colours[(k + 1) % 20], lw=1.3, ls="--" if published else "-",
                                marker="x" if published else ".", ms=5, label=ANCHORS.get(codec, codec))
            k += 1
    for ax, metric, ylabel in ((axes[0], "psnr", "PSNR RGB (dB)"),
                               (axes[1], "ms_ssim_db", "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)")):
        for codec, c in cv.items():
            ok = np.isfinite(c[metric])
            if ok.sum():
                ax.plot(c["bpp"][ok], c[metric][ok], **style[codec])
        ax.set_xlim(0, xmax)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        shown = [np.where(c["bpp"] <= xmax, c[metric], np.nan) for c in cv.values()]
        shown = [v for v in shown if np.isfinite(v).any()]
        lo, hi = min(np.nanmin(v) for v in shown), max(np.nanmax(v) for v in shown)
        ax.set_ylim(lo - 0.5, hi + 0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")  # beside the axes, never over a curve
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="use the first N Kodak images (default all 24)")
    parser.add_argument("--qualities", default=",".join(map(str, DEFAULT_QUALITIES)),
                        help="bbimg -q values, comma-separated (at least 4 for a BD-rate)")
    parser.add_argument("--codecs", default=None, help="only these reference codecs, comma-separated")
    parser.add_argument("--model", default=None, help="bbimg model name (default: the shipped one)")
    parser.add_argument("--also-models", default="", help="other installed models to code the images with, "
                        "compared like a reference codec (e.g. bbimg-hvae-v5)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="ignore rows measured by earlier runs")
    parser.add_argument("--skip-bbimg", action="store_true", help="measure only the reference codecs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine more threads are rarely faster)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    args.qualities = [int(q) for q in args.qualities.split(",")]
    args.also_models = [m for m in args.also_models.split(",") if m]
    if any(not 1 <= q <= 100 for q in args.qualities):
        parser.error("qualities must be in 1..100")

    t0 = time.time()
    rows, codecs = measure(args)
    rows.sort(key=lambda r: (r["codec"], r["image"], r["bpp"]))
    write_csv(rows, args.out_dir / "rd_kodak.csv", COLUMNS)
    cv = curves(rows, codecs)
    table = bd_table(cv, codecs)
    write_csv(table, args.out_dir / "bd_rate.csv")
    (args.out_dir / "bd_rate.md").write_text(markdown(table) + "\n")
    ranges = range_table(cv, codecs, args.also_models)
    write_csv(ranges, args.out_dir / "bd_rate_ranges.csv",
              ("test", "reference", "bpp_lo", "bpp_hi", "psnr_lo", "psnr_hi", "bd_rate_psnr"))
    n = len({r["image"] for r in rows})
    plot(cv, args.out_dir / "rd_kodak.png", f"Kodak, {n} image{'s' if n != 1 else ''} (published anchors: 24)")

    print(f"\n{n} Kodak images; mean curves (bpp / PSNR / MS-SSIM):")
    for codec in [*TESTS, *codecs]:
        if codec in cv:
            bpp, p = average_curve(rows, codec, "psnr")
            _, m = average_curve(rows, codec, "ms_ssim")
            print(f"  {codec:12s} " + "  ".join(f"{a:.3f}/{b:.2f}/{c:.4f}" for a, b, c in zip(bpp, p, m)))
    print("\nBD-rate of bbimg (negative = fewer bits than the reference at equal quality):\n")
    print(markdown(table))
    print("\nBD-rate (PSNR) over the quality bbimg gives between two rates:")
    for r in ranges:
        print(f"  {r['test']:12s} vs {r['reference']:14s} {r['bpp_lo']}-{r['bpp_hi']} bpp "
              f"({r['psnr_lo']:.2f}-{r['psnr_hi']:.2f} dB): {r['bd_rate_psnr']:+.1f}%")
    print("\nn/a: the curves share no quality range (or fewer than 4 points); (x dB): computed over an overlap "
          "of only x dB, so indicative only.")
    if n < 24:
        print(f"\nnote: {n} images only; the published anchors average all 24, so BD-rates against them are "
              "indicative only.")
    print(f"\nwrote {args.out_dir / 'rd_kodak.csv'}, {args.out_dir / 'bd_rate.csv'} (and .md, _ranges.csv), "
          f"{args.out_dir / 'rd_kodak.png'}; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
