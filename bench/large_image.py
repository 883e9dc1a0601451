"""Peak memory and time of encoding and decoding a large image with the shipped model.

    nice -n 19 python bench/large_image.py                    # 8192x8192 -> bench/results/large_image.csv
    python bench/large_image.py --size 4096 --quality 30 --seam 512
    python bench/large_image.py --size 0 --seam 0 --bomb 16384 --out bench/results/large_image_bomb.csv

The image is synthetic but natural-ish: a 1/f-like sum of smooth noise octaves (features from
8 pixels to a quarter of the image) plus a gradient and a few hard-edged shapes. Encoding and
decoding each run in a fresh subprocess, which reports its peak RSS (``VmHWM``, including
Python, the libraries and the model) and wall time; images above ``bbimg.tiling.THRESHOLD_PIXELS``
are tiled automatically. The transforms run where the CLI runs them (ONNX Runtime on the CPU; the
``backend`` column says which; ``BBIMG_BACKEND=torch`` forces torch). PSNR is of the decoded
image against the original.

``--bomb N`` also decodes a hand-made minimal file (about 150 bytes: all block plans empty, no
index bits, a valid file) that claims N x N pixels: the decoder's memory for the largest image a
file can ask for, without the encode (the format allows up to 16384 x 16384). The library's
decompression-bomb limit is lifted for it.

``--seam N`` also codes an N x N crop both untiled and with forced small tiles (256 pixels, the
default halo) and writes PSNR between the two decodes and of each against the original to
``bench/results/tiling_seams.csv``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, psnr, write_csv  # noqa: E402

COLUMNS = ["size", "stage", "quality", "seconds", "cpu_seconds", "peak_rss_mb", "baseline_rss_mb", "file_bytes", "bpp", "psnr",
           "tiled", "backend", "threads", "cpus", "model"]
SEAM_COLUMNS = ["size", "quality", "tile_px", "halo_px", "psnr_tiled_vs_untiled", "psnr_untiled", "psnr_tiled",
                "same_bytes", "max_abs_diff", "frac_pixels_differ", "model"]


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8, smooth and natural-ish (see the module docstring)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    acc = np.zeros((size, size, 3), np.float32)
    cell = 8
    weight_sum = 0.0
    while cell <= size // 4:
        n = size // cell + 3
        noise = Image.fromarray((rng.random((n, n, 3)) * 255).astype(np.uint8))
        layer = np.asarray(noise.resize((size, size), Image.BICUBIC, box=(1, 1, n - 2, n - 2)), np.float32)
        layer = 0.75 * layer.mean(axis=2, keepdims=True) + 0.25 * layer  # correlated channels, as in photos
        weight = cell ** 0.8
        acc += weight * (layer - 127.5)
        weight_sum += weight
        cell *= 2
    acc *= 2.5 / weight_sum
    acc += np.linspace(60, 190, size, dtype=np.float32)[None, :, None]
    image = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
        w, h = (int(v) for v in rng.integers(size // 32, size // 6, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x0 + w, y0 + h), fill=colour)
    return np.asarray(image)


def minimal_file(width: int, height: int) -> bytes:
    """A valid file for the shipped model with zero index bits: it decodes to prior samples."""
    from bbimg import codec
    from bbimg import format as bbi
    from bbimg.model_files import DEFAULT_MODEL, find_weights, weights_sha256
    from bbimg.rec.channel_plan import encode_channel_plan

    z_channels, y_channels, _ = codec._latent_channels(DEFAULT_MODEL)
    plans = {n: encode_channel_plan(np.zeros(n, np.int32), np.zeros(n, np.int32), 16) for n in (z_channels, y_channels)}
    header = bbi.Header(width=width, height=height, model_name=DEFAULT_MODEL,
                        weights_hash=weights_sha256(find_weights(DEFAULT_MODEL)), quality_t=0.5, quality_q=50, seed=0,
                        kappa=16, temperature=1.0)
    sections = (bbi.Section("ZPLN", plans[z_channels]), bbi.Section("ZIDX", b""),
                bbi.Section("YPLN", plans[y_channels]), bbi.Section("YIDX", b""))
    return bbi.write(bbi.Container(header, sections))


def _rss_mb() -> float:
    """Peak RSS of this process so far, in MiB: VmHWM (ru_maxrss would include the parent's peak,
    which Linux carries across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU time (user + system, all threads) of this process so far, in seconds: on a shared
    machine it says more about the work than the wall time does."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(stage: str, src: str, dst: str, quality: int) -> None:
    """Run in a fresh process: one encode or decode, a JSON line of measurements on stdout."""
    from bbimg import codec, tiling
    from bbimg.model_files import DEFAULT_MODEL
    from bbimg.transforms import load_transforms

    # the model the stage uses (a file names its own), loaded before the baseline is taken
    header = None if stage == "encode" else codec.info(Path(src).read_bytes())
    tr = load_transforms(DEFAULT_MODEL if header is None else header["model"], "cpu")
    backend = "onnxruntime" if type(tr.backend).__name__ == "OrtTransforms" else "torch"
    baseline = _rss_mb()
    t0, c0 = time.perf_counter(), _cpu_s()
    if stage == "encode":
        pixels = np.load(src)
        t0, c0 = time.perf_counter(), _cpu_s()
        data = codec.encode(pixels, quality)
        seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
        Path(dst).write_bytes(data)
        size = pixels.shape[:2]
        extra = dict(file_bytes=len(data), bpp=len(data) * 8 / (size[0] * size[1]))
    else:
        data = Path(src).read_bytes()
        image = codec.decode(data, max_pixels=header["width"] * header["height"])  # lift the bomb guard
        seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
        size = (image.height, image.width)
        extra = {}
    peak = _rss_mb()
    if stage == "decode":
        np.save(dst, np.asarray(image))
    print(json.dumps(dict(stage=stage, seconds=round(seconds, 2), cpu_seconds=round(cpu, 1), peak_rss_mb=round(peak),
                          baseline_rss_mb=round(baseline), tiled=tiling.should_tile(*size), backend=backend,
                          threads=os.environ.get("BBIMG_THREADS") or "default", model=tr.name, **extra)), flush=True)


def _run_child(*args: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def large(size: int, quality: int, workdir: Path) -> list[dict]:
    image = synthetic_image(size)
    src, coded, decoded = workdir / "image.npy", workdir / "image.bbi", workdir / "decoded.npy"
    np.save(src, image)
    rows = []
    enc = _run_child("encode", str(src), str(coded), str(quality))
    print(f"encode {size}x{size}: {enc}", flush=True)
    dec = _run_child("decode", str(coded), str(decoded), str(quality))
    dec.update(file_bytes=enc["file_bytes"], bpp=enc["bpp"], psnr=round(psnr(np.load(decoded), image), 2))
    print(f"decode {size}x{size}: {dec}", flush=True)
    for r in (enc, dec):
        r.update(size=size, quality=quality, cpus=os.cpu_count())
        rows.append(r)
    return rows


def seams(size: int, quality: int, tile_px: int = 256) -> dict:
    """Code a size x size image untiled and with forced tiles; PSNR between and against the original."""
    from bbimg import codec, tiling
    from bbimg.models import DEFAULT_MODEL

    image = synthetic_image(size, seed=1)
    untiled_bytes = codec.encode(image, quality)
    untiled = np.asarray(codec.decode(untiled_bytes))
    old = tiling.THRESHOLD_PIXELS, tiling.TILE_LATENTS
    tiling.THRESHOLD_PIXELS, tiling.TILE_LATENTS = 0, tile_px // tiling.LATENT_STRIDE
    try:
        tiled_bytes = codec.encode(image, quality)
        tiled = np.asarray(codec.decode(tiled_bytes))
    finally:
        tiling.THRESHOLD_PIXELS, tiling.TILE_LATENTS = old
    diff = np.abs(tiled.astype(np.int16) - untiled.astype(np.int16))
    return dict(size=size, quality=quality, tile_px=tile_px, halo_px=tiling.HALO_LATENTS * tiling.LATENT_STRIDE,
                psnr_tiled_vs_untiled=round(psnr(tiled, untiled), 2), psnr_untiled=round(psnr(untiled, image), 2),
                psnr_tiled=round(psnr(tiled, image), 2), same_bytes=tiled_bytes == untiled_bytes,
                max_abs_diff=int(diff.max()), frac_pixels_differ=float((diff > 0).mean()), model=DEFAULT_MODEL)


def bomb(size: int, workdir: Path) -> dict:
    coded = workdir / "minimal.bbi"
    coded.write_bytes(minimal_file(size, size))
    row = _run_child("decode", str(coded), str(workdir / "minimal.npy"), "0")
    row.update(size=size, stage="decode-minimal-file", file_bytes=coded.stat().st_size, cpus=os.cpu_count())
    print(f"decode of a {row['file_bytes']}-byte file claiming {size}x{size}: {row}", flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--quality", type=int, default=30)
    ap.add_argument("--bomb", type=int, default=0, help="decode a minimal file claiming N x N pixels")
    ap.add_argument("--seam", type=int, default=1024, help="size of the tiled-vs-untiled check (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="threads of the transforms (BBIMG_THREADS; default: all cores)")
    ap.add_argument("--out", type=Path, default=RESULTS / "large_image.csv")
    ap.add_argument("--child", nargs=4, metavar=("STAGE", "SRC", "DST", "QUALITY"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        stage, src, dst, quality = args.child
        child(stage, src, dst, int(quality))
        return
    if args.threads:
        os.environ["BBIMG_THREADS"] = str(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    if args.seam:
        row = seams(args.seam, args.quality)
        print(f"seams: {row}", flush=True)
        write_csv([row], args.out.parent / "tiling_seams.csv", SEAM_COLUMNS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.size:
            rows += large(args.size, args.quality, Path(tmp))
        if args.bomb:
            rows.append(bomb(args.bomb, Path(tmp)))
    if rows:
        write_csv(rows, args.out, COLUMNS)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
