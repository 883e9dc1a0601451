"""Encode / decode wall time and peak memory per Kodak image: bbimg (CPU, and CUDA when available),
the reference codecs of bench/rd.py, and CompressAI's bmshj2018-hyperprior (random weights).

    python bench/speed.py [--images N] [--codecs bbimg,jpeg,...] [--threads T] [--out FILE]

Each codec runs in its own fresh process (multiprocessing, spawn), so its peak RSS is its own:
Python and library imports happen first and are not timed; a learned codec then loads its model
once (``load_s``, reported separately, not in the per-image times) and codes a small crop once to
warm up (not timed). Per image, the process's peak RSS is reset (Linux ``/proc/self/clear_refs``)
before encoding, so ``peak_rss_mb`` is the high-water mark of that image's encode plus decode, the
interpreter and loaded libraries included (``base_rss_mb`` is the resident size just before).
Where the reset is unavailable it is the process's peak so far (ru_maxrss).

One operating point per codec, near 0.5-1 bpp on Kodak: bbimg -q 75, JPEG quality 50, WebP 75,
JPEG 2000 0.75 bpp, AVIF quality 60, JPEG XL distance 3.2, hyperprior quality 3. Libraries use
their default threading; bbimg and CompressAI use torch's default thread count unless --threads.

``hyperprior`` is CompressAI's bmshj2018-hyperprior (``compressai.models.ScaleHyperprior``, N=128,
M=192 as for its quality 3) with random weights: its architecture, transforms and rANS coding
cost as much time as the trained model, but its bpp is meaningless. CompressAI is installed
without its dependencies (``pip install --no-deps -r bench/requirements-compressai.txt``, so it
cannot replace torch or pull torchvision) and imported through bench/compressai_shim.py, which
skips the package ``__init__`` files that need torchvision, torch-geometric and pandas. Its
``bytes`` are the two rANS strings plus 8 bytes for the image and latent shapes; the input is
padded to a multiple of 64 (replicate) and the output cropped back.

The machine is shared and noisy (a training run may hold the CPU cores): absolute times vary
between runs, which is why the reference codecs are measured in the same run, right beside bbimg;
compare codecs within one run, not across runs. Writes bench/results/speed.csv
(codec,device,param,image,bytes,bpp,encode_s,decode_s,peak_rss_mb,base_rss_mb,load_s).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, kodak_files, write_csv  # noqa: E402
from bbimg.geometry import padded_size  # noqa: E402

COLUMNS = ("codec", "device", "param", "image", "bytes", "bpp", "encode_s", "decode_s", "peak_rss_mb",
           "base_rss_mb", "load_s")
BBIMG_Q = 75
HYPERPRIOR_Q = 3


# ---------------------------------------------------------------------------------------------
# Inside the worker process


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset_ok: bool) -> float:
    if reset_ok:
        return _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bbimg_coder(device: str):
    import bbimg
    from bbimg.models import DEFAULT_MODEL, load_model

    start = time.perf_counter()
    load_model(DEFAULT_MODEL, device)
    load_s = time.perf_counter() - start
    return (lambda im: bbimg.encode(im, quality=BBIMG_Q, device=device),
            lambda data: bbimg.decode(data, device=device)), load_s, BBIMG_Q


def _hyperprior_coder(device: str):
    import torch
    from compressai_shim import scale_hyperprior, scale_hyperprior_class  # CompressAI without torchvision

    scale_hyperprior_class()  # the import, not timed (as for the other codecs)
    start = time.perf_counter()
    net = scale_hyperprior(HYPERPRIOR_Q, seed=0).to(device)
    load_s = time.perf_counter() - start

    @torch.no_grad()
    def encode(im):
        h, w = im.shape[:2]
        x = torch.from_numpy(im.copy()).to(device).permute(2, 0, 1)[None].float() / 255
        ph, pw = padded_size(h, w, 64)  # CompressAI's hyperprior has the same stride
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        out = net.compress(x)
        return (h, w, out["shape"], [s[0] for s in out["strings"]])

    @torch.no_grad()
    def decode(coded):
        h, w, shape, strings = coded
        x = net.decompress([[s] for s in strings], shape)["x_hat"][0, :, :h, :w]
        return x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()

    return (encode, decode), load_s, HYPERPRIOR_Q


def _size(coded) -> int:
    if isinstance(coded, (bytes, bytearray)):
        return len(coded)
    # CompressAI: the two entropy-coded strings plus 8 bytes for width, height and z shape
    return sum(len(s) for s in coded[3]) + 8


def worker(job: dict, files: list[str], result_path: str) -> None:
    """Run one codec over the images; write {"rows": [...]} or {"note": "..."} to result_path."""
    import numpy as np
    from PIL import Image

    out: dict = {"rows": []}
    try:
        if job.get("threads"):
            import torch
            torch.set_num_threads(job["threads"])
        name, device = job["codec"], job["device"]
        if name == "bbimg":
            (encode, decode), load_s, param = _bbimg_coder(device)
        elif name == "hyperprior":
            try:
                (encode, decode), load_s, param = _hyperprior_coder(device)
            except ImportError as exc:
                raise RuntimeError(f"CompressAI does not import here ({exc}); install it with "
                                   "pip install --no-deps -r bench/requirements-compressai.txt") from exc
        else:
            from common import reference_codecs
            codecs, notes = reference_codecs({name})
            if not codecs:
                raise RuntimeError("; ".join(notes) or f"unknown codec {name}")
            codec = codecs[0]
            param = codec.speed_param
            encode, decode, load_s = (lambda im: codec.encode(im, param)), codec.decode, 0.0
        images = [(Path(f).stem, np.asarray(Image.open(f).convert("RGB"))) for f in files]
        decode(encode(images[0][1][:64, :64].copy()))  # warm-up, not timed
        for stem, image in images:
            base = _status_mb("VmRSS")
            reset_ok = _reset_peak()
            t0 = time.perf_counter()
            coded = encode(image)
            t1 = time.perf_counter()
            decoded = decode(coded)
            t2 = time.perf_counter()
            size = _size(coded)
            if np.asarray(decoded).shape[:2] != image.shape[:2]:
                raise RuntimeError(f"{stem}: decoded shape {np.asarray(decoded).shape} differs from the input")
            out["rows"].append(dict(codec=job["label"], device=device, param=param, image=stem, bytes=size,
                                    bpp=size * 8 / (image.shape[0] * image.shape[1]), encode_s=t1 - t0,
                                    decode_s=t2 - t1, peak_rss_mb=_peak_mb(reset_ok), base_rss_mb=base,
                                    load_s=load_s))
    except Exception as exc:  # reported by the parent as a note
        out = {"note": str(exc) if type(exc) is RuntimeError else f"{type(exc).__name__}: {exc}"}
    with open(result_path, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------------------------------------
# Parent


def jobs(selected: set[str] | None, threads: int | None) -> list[dict]:
    from common import reference_codecs

    out = [dict(codec="bbimg", device="cpu", label="bbimg")]
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        out.append(dict(codec="bbimg", device="cuda", label="bbimg-cuda"))
    codecs, notes = reference_codecs()
    out += [dict(codec=c.name, device="cpu", label=c.name) for c in codecs]
    out.append(dict(codec="hyperprior", device="cpu", label="hyperprior"))
    if cuda:
        out.append(dict(codec="hyperprior", device="cuda", label="hyperprior-cuda"))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for j in out:
        j["threads"] = threads
    return [j for j in out if selected is None or j["codec"] in selected or j["label"] in selected]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="use the first N Kodak images (default all 24)")
    parser.add_argument("--codecs", default=None, help="only these codecs (names as in the CSV), comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for bbimg and CompressAI")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.csv")
    args = parser.parse_args()

    files = [str(f) for f in kodak_files(args.images)]
    ctx = mp.get_context("spawn")
    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for job in jobs(set(args.codecs.split(",")) if args.codecs else None, args.threads):
            result = Path(tmp) / f"{job['label']}.json"
            start = time.time()
            proc = ctx.Process(target=worker, args=(job, files, str(result)))
            proc.start()
            proc.join()
            if not result.exists():
                notes.append(f"{job['label']}: worker exited with status {proc.exitcode} and no result")
                continue
            out = json.loads(result.read_text())
            if "note" in out:
                notes.append(f"{job['label']}: {out['note']}")
                print(f"{job['label']}: skipped ({out['note']})", file=sys.stderr, flush=True)
                continue
            rows += out["rows"]
            print(f"{job['label']}: {len(out['rows'])} images ({time.time() - start:.0f} s)", file=sys.stderr,
                  flush=True)
    if not rows:
        raise SystemExit("no codec ran")
    write_csv(rows, args.out, COLUMNS)

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    print(f"\n{len(files)} Kodak images, means per image (peak RSS: max over images):\n")
    print("| codec | device | param | bpp | load s | encode s | decode s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for label in dict.fromkeys(r["codec"] for r in rows):
        rs = [r for r in rows if r["codec"] == label]
        print(f"| {label} | {rs[0]['device']} | {rs[0]['param']} | {mean(rs, 'bpp'):.3f} | {rs[0]['load_s']:.2f} | "
              f"{mean(rs, 'encode_s'):.3f} | {mean(rs, 'decode_s'):.3f} | "
              f"{max(r['peak_rss_mb'] for r in rs):.0f} |")
    for note in notes:
        print(f"note: {note}")
    print(f"\nwrote {args.out}")
    if any(math.isnan(r["peak_rss_mb"]) for r in rows):
        print("note: peak RSS unavailable on this system for some rows", file=sys.stderr)


if __name__ == "__main__":
    main()
