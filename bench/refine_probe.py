"""Posterior refinement (bbimg.refine) measured on real files: ideal rate and posterior-sample PSNR
before and after, and what the codec's REC path makes of the refined posteriors.

    python bench/refine_probe.py run  [--images kodim05,kodim15,kodim23] [--t 0.1,0.4,0.7,1.0]
                                      [--configs 0,3@0.5,10@0.5,10@0.5+5@0.1] [--crop 256] [--tag NAME]
                                      [--settings antithetic=0,optimizer=adam,...] [--skip-ratio R]
    python bench/refine_probe.py time [--images kodim15] [--steps 5] [--repeats 3]
    python bench/refine_probe.py report [--tag NAME]

A config is ``STEPS@LR`` (joint refinement of q(z), q(y)) optionally followed by ``+YSTEPS@YLR``
(re-fit of q(y) against p(y | z_hat) once z is coded); ``0`` is today's encoder. ``--settings``
overrides fields of ``bbimg.refine.Settings`` (booleans 0/1). Each (image, t, config) appends one
row to bench/results/refine_probe.csv (``tag`` names the run; each run codes its own config 0, so
a tag is self-contained even when the codec changed between runs):

* ideal_bpp, ideal_psnr: KL bits of both levels per pixel and PSNR of the decoded antithetic pair
  of posterior samples (``bbimg.refine.objective``, one fixed draw), for the posteriors the file is
  coded from (after joint refinement; before the y re-fit, which needs z_hat); ideal_bits_z/y the
  two levels' bits;
* bpp, psnr: real file bytes and the real decode (``bbimg.decode``, the shipped decoder);
  kl_bpp_coded: the codec's own KL (prior-skipped dims cost nothing); coded_kl_z, coded_kl_y_before,
  coded_kl_y: KL of every dim against the priors of the file (p(y | z_hat)), before and after the
  y re-fit;
* refine_s, refine_cpu_s: wall and process CPU seconds of the refinement (both levels); s_per_step;
  encode_s: the whole encode (analysis, refinement, coding; not the ideal measurement), torch at
  2 threads, the model already loaded (``time`` measures the steps on an image, and the default
  encode, with min over repeats).

The codec is not modified: its transforms are wrapped so that ``analysis_pixels`` returns the
refined q(y) (its ``hyper`` then returns the refined q(z)), and ``y_prior`` re-fits q(y) in place
against the prior of the coded z. ``report`` prints BD-rates (PSNR, real files) of each config
against config 0 over the t values: per image, on the mean curve (bpp and PSNR averaged over the
images per t, as bench/rd.py does), and the per-image mean of the ideal BD-rate. The machine is
shared: timings are noisy (the CPU seconds are steadier; the ``time`` figures were taken idle).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, RESULTS, bd_rate, psnr  # noqa: E402

import torch  # noqa: E402

from bbimg import codec, refine  # noqa: E402
from bbimg.models import DEFAULT_MODEL, load_model  # noqa: E402

CSV = RESULTS / "refine_probe.csv"
COLUMNS = ["tag", "image", "crop", "t", "config", "steps", "lr", "y_steps", "y_lr", "settings", "ideal_bpp",
           "ideal_psnr", "bpp", "psnr", "kl_bpp_coded", "ideal_bits_z", "ideal_bits_y", "coded_kl_z", "coded_kl_y_before",
           "coded_kl_y", "refine_s", "refine_cpu_s", "s_per_step", "encode_s"]


def parse_config(text: str) -> tuple[int, float, int, float]:
    """'STEPS@LR[+YSTEPS@YLR]' -> (steps, lr, y_steps, y_lr)."""
    joint, _, yfit = text.partition("+")

    def one(part: str) -> tuple[int, float]:
        if not part or part == "0":
            return 0, 0.0
        steps, _, lr = part.partition("@")
        return int(steps), float(lr)

    return (*one(joint), *one(yfit))


def parse_settings(text: str) -> refine.Settings:
    """'name=value,...' -> refine.Settings (booleans as 0/1, 'none' for None)."""
    values = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        default = getattr(refine.Settings(), key)
        values[key] = (None if value in ("none", "auto") else bool(int(value)) if isinstance(default, bool)
                       else value if isinstance(default, str) else float(value))
    return dataclasses.replace(refine.Settings(), **values)


class RefinedTransforms:
    """The codec's transforms with q(z), q(y) refined (and q(y) re-fitted once z is coded)."""

    def __init__(self, base, net, steps: int, lr: float, y_steps: int, y_lr: float, seed: int = 0):
        self.base, self.net = base, net
        self.steps, self.lr, self.y_steps, self.y_lr, self.seed = steps, lr, y_steps, y_lr, seed
        self.clock = [0.0, 0.0]  # wall, cpu seconds spent refining
        self.ideal = None

    def __getattr__(self, name):
        return getattr(self.base, name)

    def _timed(self, fn, *args, **kw):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        self.clock[0] += time.perf_counter() - w
        self.clock[1] += time.process_time() - c
        return out

    def analysis_pixels(self, pixels: np.ndarray, t: float):
        ym, ys = self.base.analysis_pixels(pixels, t)
        zm, zs = self.base.hyper(ym, t)
        if self.steps:
            ym, ys, zm, zs = self._timed(refine.refine_posteriors, self.net, pixels, t, ym, ys, zm, zs,
                                         steps=self.steps, lr=self.lr, seed=self.seed)
        w = time.perf_counter()
        self.ideal = refine.objective(self.net, pixels, t, ym, ys, zm, zs)  # a measurement, not part of the encode
        self.ideal_s = time.perf_counter() - w
        self.pixels, self.y, self.z = pixels, (np.array(ym), np.array(ys)), (zm, zs)
        return self.y

    def hyper(self, y_mean: np.ndarray, t: float):
        assert y_mean is self.y[0]
        return self.z

    def y_prior(self, z: np.ndarray, t: float):
        pm, ps = self.base.y_prior(z, t)
        zpm, zps = self.base.z_prior(t, *self.z[0].shape[2:])
        self.coded_kl_z = kl_bits(*self.z, zpm, zps)
        self.coded_kl_y_before = kl_bits(*self.y, pm, ps)
        if self.y_steps:
            ym, ys = self._timed(refine.refine_y, self.net, self.pixels, t, self.y[0], self.y[1], pm, ps,
                                 steps=self.y_steps, lr=self.y_lr, seed=self.seed + 1)
            np.copyto(self.y[0], ym)  # the codec holds these arrays: it codes y from them next
            np.copyto(self.y[1], ys)
        self.coded_kl_y = kl_bits(*self.y, pm, ps)
        return pm, ps


def kl_bits(mq, sq, mp, sp) -> float:
    """KL(q || p) in bits of diagonal Gaussians, summed (every dim: no prior skip)."""
    mq, sq, mp, sp = (np.asarray(a, np.float64) for a in (mq, sq, mp, sp))
    return float((0.5 * ((sq / sp) ** 2 + ((mq - mp) / sp) ** 2 - 1) - np.log(sq / sp)).sum() / np.log(2))


def load_image(name: str, crop: int) -> np.ndarray:
    img = np.asarray(Image.open(KODAK / f"{name}.png").convert("RGB"))
    if crop:
        h, w = img.shape[:2]
        r, c = (h - crop) // 2, (w - crop) // 2
        img = np.ascontiguousarray(img[r:r + crop, c:c + crop])
    return img


def run(args) -> None:
    torch.set_num_threads(args.threads)
    refine.SETTINGS = parse_settings(args.settings)
    settings = ("codec_skip_ratio=%g;" % args.skip_ratio if args.skip_ratio is not None else "") + ";".join(
        f"{k}={'auto' if v is None else (int(v) if isinstance(v, bool) else v)}"
        for k, v in dataclasses.asdict(refine.SETTINGS).items())
    _, net = load_model(args.model)
    coder = {} if args.skip_ratio is None else dict(skip_ratio=args.skip_ratio)
    original = codec.load_transforms
    new_file = not CSV.exists()
    with open(CSV, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for name in args.images.split(","):
            img = load_image(name, args.crop)
            for t in (float(v) for v in args.t.split(",")):
                for config in args.configs.split(","):
                    steps, lr, y_steps, y_lr = parse_config(config)
                    wrapped = RefinedTransforms(original(args.model, "cpu"), net, steps, lr, y_steps, y_lr)
                    codec.load_transforms = lambda *a, **k: wrapped
                    stats: list = []
                    try:
                        start = time.perf_counter()
                        data = codec.encode(img, quality=1 + 99 * t, model=args.model, stats=stats, **coder)
                        encode_s = time.perf_counter() - start - wrapped.ideal_s
                    finally:
                        codec.load_transforms = original
                    decoded = np.asarray(codec.decode(data).convert("RGB"))
                    pixels = img.shape[0] * img.shape[1]
                    total_steps = steps + y_steps
                    row = dict(tag=args.tag, image=name, crop=args.crop, t=t, config=config, steps=steps, lr=lr,
                               y_steps=y_steps, y_lr=y_lr, settings=settings,
                               ideal_bpp=round(wrapped.ideal.bpp, 5), ideal_psnr=round(wrapped.ideal.psnr, 4),
                               bpp=round(len(data) * 8 / pixels, 5), psnr=round(psnr(img, decoded), 4),
                               kl_bpp_coded=round(stats[0].kl_bits / pixels, 5),
                               ideal_bits_z=round(wrapped.ideal.bits_z), ideal_bits_y=round(wrapped.ideal.bits_y),
                               coded_kl_z=round(wrapped.coded_kl_z), coded_kl_y_before=round(wrapped.coded_kl_y_before),
                               coded_kl_y=round(wrapped.coded_kl_y),
                               refine_s=round(wrapped.clock[0], 2), refine_cpu_s=round(wrapped.clock[1], 2),
                               s_per_step=round(wrapped.clock[0] / total_steps, 4) if total_steps else "",
                               encode_s=round(encode_s, 2))
                    writer.writerow(row)
                    f.flush()
                    print(" ".join(f"{k}={row[k]}" for k in ("image", "t", "config", "ideal_bpp", "ideal_psnr", "bpp",
                                                            "psnr", "s_per_step", "encode_s")), flush=True)


def timing(args) -> None:
    """Seconds per refinement step on full images (min over repeats: the machine is shared),
    single draws against antithetic pairs, and the parts of an encode around it."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    _, net = load_model(args.model)
    load_s = time.perf_counter() - start
    base = codec.load_transforms(args.model, "cpu")
    for name in args.images.split(","):
        img = load_image(name, 0)
        w = time.perf_counter()
        ym, ys = base.analysis_pixels(img, 0.5)
        zm, zs = base.hyper(ym, 0.5)
        analysis_s = time.perf_counter() - w
        w = time.perf_counter()
        codec.encode(img, quality=50, model=args.model)
        encode_s = time.perf_counter() - w
        for label, anti in (("single", False), ("antithetic", True)):
            refine.SETTINGS = dataclasses.replace(refine.Settings(), antithetic=anti)
            walls, cpus = [], []
            for _ in range(args.repeats):
                w, c = time.perf_counter(), time.process_time()
                refine.refine_posteriors(net, img, 0.5, ym, ys, zm, zs, steps=args.steps, lr=0.2)
                walls.append((time.perf_counter() - w) / args.steps)
                cpus.append((time.process_time() - c) / args.steps)
            print(f"{name} {img.shape[1]}x{img.shape[0]} {label}: {min(walls):.3f} s/step wall (median "
                  f"{np.median(walls):.3f}), {min(cpus):.3f} CPU s/step; includes the start/end check "
                  f"amortised over {args.steps} steps", flush=True)
        print(f"{name}: model load (torch) {load_s:.2f} s, analysis+hyper (ONNX Runtime) {analysis_s:.2f} s, "
              f"default encode {encode_s:.2f} s", flush=True)


def report(args) -> None:
    with open(CSV, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not args.tag or r["tag"] == args.tag]
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["tag"], r["crop"], r["settings"]), {}).setdefault(r["config"], []).append(r)
    for (tag, crop, settings), by_config in groups.items():
        base = by_config.get("0")
        if base is None:
            continue
        print(f"\n[{tag}] crop={crop} {settings}")
        images = sorted({r["image"] for r in base})
        print(f"{'config':>18} {'images':>6} " + " ".join(f"{i:>8}" for i in images)
              + f" {'mean':>8} {'ideal':>8} {'s/step':>7} {'refine_s':>8}")
        for config, rs in by_config.items():
            per, ideal_per, mean_ref, mean_test, mi_ref, mi_test = [], [], [], [], [], []
            for image in images:
                ref = sorted((float(r["t"]), r) for r in base if r["image"] == image)
                test = {float(r["t"]): r for r in rs if r["image"] == image}
                pairs = [(a, test[t]) for t, a in ref if t in test]
                if len(pairs) < 4:
                    per.append(float("nan"))
                    continue
                col = lambda ps, k, side: [float(p[side][k]) for p in ps]  # noqa: E731
                per.append(bd_rate(col(pairs, "bpp", 0), col(pairs, "psnr", 0), col(pairs, "bpp", 1), col(pairs, "psnr", 1)))
                ideal_per.append(bd_rate(col(pairs, "ideal_bpp", 0), col(pairs, "ideal_psnr", 0),
                                         col(pairs, "ideal_bpp", 1), col(pairs, "ideal_psnr", 1)))
                mean_ref.append(np.array([[float(a["bpp"]), float(a["psnr"])] for a, _ in pairs]))
                mean_test.append(np.array([[float(b["bpp"]), float(b["psnr"])] for _, b in pairs]))
            mean = float("nan")
            if mean_ref and all(m.shape == mean_ref[0].shape for m in mean_ref + mean_test):
                a, b = np.mean(mean_ref, 0), np.mean(mean_test, 0)
                mean = bd_rate(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
            steps = [float(r["s_per_step"]) for r in rs if r["s_per_step"]]
            secs = [float(r["refine_s"]) for r in rs]
            print(f"{config:>18} {len(per):>6} " + " ".join(f"{v:+8.2f}" for v in per) + f" {mean:+8.2f}"
                  f" {np.nanmean(ideal_per) if ideal_per else float('nan'):+8.2f}"
                  f" {np.mean(steps) if steps else 0:7.3f} {np.mean(secs):8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--images", default="kodim05,kodim15,kodim23")
    r.add_argument("--t", default="0.1,0.4,0.7,1.0")
    r.add_argument("--configs", default="0,10@0.03,25@0.03,50@0.03,100@0.03")
    r.add_argument("--crop", type=int, default=0, help="centre crop size (0: the full image)")
    r.add_argument("--tag", default="")
    r.add_argument("--settings", default="", help="refine.Settings overrides, e.g. precondition=0,decay=1")
    r.add_argument("--model", default=DEFAULT_MODEL)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--skip-ratio", type=float, default=None, help="the codec's prior skip rule (0: off)")
    tm = sub.add_parser("time")
    tm.add_argument("--images", default="kodim15")
    tm.add_argument("--steps", type=int, default=5)
    tm.add_argument("--repeats", type=int, default=3)
    tm.add_argument("--model", default=DEFAULT_MODEL)
    tm.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("report")
    p.add_argument("--tag", default="")
    args = ap.parse_args()
    {"run": run, "time": timing, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
