"""Encoder efforts on Kodak: BD-rate against the default effort, the model's ideal curve, WebP and
AVIF 4:4:4 (all measured in this run), and encode time per image.

    python bench/effort.py [--images 24 | --names kodim05,kodim15] [--qualities 5,20,40,60,80] [--efforts 5,7,9] [--fresh]

Each bbimg row is one ``bbimg.codec.encode(image, q, effort=e)`` (real file bytes, headers
included) decoded by ``bbimg.codec.decode`` (the one decoder every effort shares); ``encode_s`` is
the wall time of the encode call in this process (models loaded beforehand; the CPU is named in
the output, and times on a shared machine are upper bounds). ``bbimg-ideal`` is the model's KL
rate with an exact posterior sample (bench/ideal_rd.py), WebP (method 6) and AVIF 4:4:4 (speed 6)
come from bench/common.py.

Writes bench/results/effort.csv (effort,quality,image,bpp,psnr,ms_ssim,encode_s),
bench/results/effort_references.csv (codec,param,image,bpp,psnr,ms_ssim) and
bench/results/effort_summary.csv and effort.md (the table printed at the end: per effort, BD-rate over PSNR and over
MS-SSIM in dB against each curve, mean and max encode seconds). Rows are cached in
bench/results/effort_cache.jsonl keyed by the code's identity, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, bd_rate, cpu_name, kodak_files, ms_ssim, psnr, reference_codecs, write_csv  # noqa: E402
from rd import Cache, code_hash, ms_ssim_db, reference_rows  # noqa: E402

COLUMNS = ["effort", "quality", "image", "bpp", "psnr", "ms_ssim", "encode_s"]
REF_COLUMNS = ["codec", "param", "image", "bpp", "psnr", "ms_ssim"]
REFERENCES = ("webp", "avif-444")


def measure(args) -> tuple[list[dict], list[dict]]:
    import torch

    from bbimg import codec
    from bbimg.models import DEFAULT_MODEL, load_model
    from ideal_rd import ideal_points

    torch.set_num_threads(2)
    info, model = load_model(DEFAULT_MODEL)
    identity = f"{info.name}:{info.sha256.hex()[:16]}:code-{code_hash()}"
    refs = [c for c in reference_codecs(set(REFERENCES))[0]]
    cache = Cache(args.out_dir / "effort_cache.jsonl", args.fresh)
    files = kodak_files(args.images)
    if args.names:
        files = [f for f in kodak_files() if f.stem in args.names.split(",")]
    print(f"model {identity}; efforts {args.efforts}; qualities {args.qualities}; {len(files)} images; "
          f"{cpu_name()}, {torch.get_num_threads()} threads", file=sys.stderr)
    rows, ref_rows = [], []
    codec.encode(np.zeros((64, 64, 3), np.uint8), 50, effort=max(args.efforts))  # load everything once
    for path in files:
        image = np.asarray(Image.open(path).convert("RGB"))
        name = path.stem
        for q in args.qualities:
            for e in args.efforts:
                key = Cache.key(f"bbimg-e{e}", q, name, identity)
                if (row := cache.get(key)) is None:
                    t0 = time.perf_counter()
                    data = codec.encode(image, q, effort=e)
                    seconds = time.perf_counter() - t0
                    decoded = np.asarray(codec.decode(data).convert("RGB"))
                    row = dict(effort=e, quality=q, image=name, bpp=len(data) * 8 / (image.shape[0] * image.shape[1]),
                               psnr=psnr(image, decoded), ms_ssim=ms_ssim(image, decoded), encode_s=seconds)
                    cache.put(key, row)
                    print(f"  {name} q{q} e{e}: {row['bpp']:.4f} bpp {row['psnr']:.3f} dB {seconds:.1f} s",
                          file=sys.stderr, flush=True)
                rows.append(row)
            key = Cache.key("bbimg-ideal", q, name, identity)
            if (row := cache.get(key)) is None:
                with torch.no_grad():
                    bpp, sample, _ = ideal_points(model, image, codec.quality_to_t(q))
                row = dict(codec="bbimg-ideal", param=q, image=name, bpp=bpp, psnr=psnr(image, sample),
                           ms_ssim=ms_ssim(image, sample))
                cache.put(key, row)
            ref_rows.append(row)
        for c in refs:
            ref_rows.extend(row for row, _ in reference_rows(cache, c, name, image))
        print(f"{name} done", file=sys.stderr, flush=True)
    return rows, ref_rows


def _curve(rows: list[dict], key: str, value, param: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean bpp and metric (MS-SSIM in dB) per parameter over the images, sorted by rate."""
    by: dict = {}
    for r in rows:
        if r[key] == value:
            by.setdefault(r[param], []).append(r)
    pts = sorted((np.mean([float(r["bpp"]) for r in rs]),
                  np.mean([float(r[metric]) if metric == "psnr" else ms_ssim_db(float(r[metric])) for r in rs]))
                 for rs in by.values())
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def _key(curve: str) -> str:
    """A curve's name as a CSV column fragment: bbimg-ideal -> ideal, avif-444 -> avif444."""
    return curve.replace("bbimg-", "").replace("-", "")


def table(rows: list[dict], ref_rows: list[dict], efforts: list[int], default: int) -> list[dict]:
    out = []
    for e in efforts:
        entry = dict(effort=e, encode_mean_s=float(np.mean([r["encode_s"] for r in rows if r["effort"] == e])),
                     encode_max_s=float(np.max([r["encode_s"] for r in rows if r["effort"] == e])))
        for metric in ("psnr", "ms_ssim"):
            test = _curve(rows, "effort", e, "quality", metric)
            entry[f"vs_default_{metric}"] = bd_rate(*_curve(rows, "effort", default, "quality", metric), *test)
            for ref in ("bbimg-ideal",) + REFERENCES:
                entry[f"vs_{_key(ref)}_{metric}"] = bd_rate(*_curve(ref_rows, "codec", ref, "param", metric), *test)
        out.append(entry)
    return out


def markdown(entries: list[dict], cpu: str, images: int) -> str:
    refs = ("default",) + ("bbimg-ideal",) + REFERENCES
    head = ["effort"] + [f"vs {r} (PSNR / MS-SSIM)" for r in refs] + ["encode s/image (mean / max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = [str(e["effort"])]
        for r in refs:
            cells.append(f"{e[f'vs_{_key(r)}_psnr']:+.1f}% / {e[f'vs_{_key(r)}_ms_ssim']:+.1f}%")
        cells.append(f"{e['encode_mean_s']:.1f} / {e['encode_max_s']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n{images} Kodak images; {cpu}. BD-rate: negative = fewer bits at equal quality.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--names", default=None, help="comma-separated Kodak names instead of the first --images")
    ap.add_argument("--qualities", default="5,20,40,60,80")
    ap.add_argument("--efforts", default="5,7,9")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    args.qualities = [int(q) for q in args.qualities.split(",")]
    args.efforts = [int(e) for e in args.efforts.split(",")]
    from bbimg.defaults import DEFAULT_EFFORT
    if DEFAULT_EFFORT not in args.efforts:
        raise SystemExit(f"--efforts must include the default effort {DEFAULT_EFFORT}")
    rows, ref_rows = measure(args)
    write_csv(rows, args.out_dir / "effort.csv", COLUMNS)
    write_csv(ref_rows, args.out_dir / "effort_references.csv", REF_COLUMNS)
    entries = table(rows, ref_rows, args.efforts, DEFAULT_EFFORT)
    images = len({r["image"] for r in rows})
    write_csv([dict(e, images=images, cpu=cpu_name()) for e in entries], args.out_dir / "effort_summary.csv")
    md = markdown(entries, cpu_name(), images)
    (args.out_dir / "effort.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
