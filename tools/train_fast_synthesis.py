"""Train a lighter synthesis transform for a shipped model: a faster decoder of the same files.

    python tools/train_fast_synthesis.py --model bbimg-hvae-v5 --minutes 60 [--widths 32,64,128]
    python tools/train_fast_synthesis.py --model bbimg-hvae-v5 --export   # weights -> ONNX part

The model's analysis, hyper transforms and priors stay frozen, so the bit stream does not change:
only the decoder's last stage is replaced. The light g_s (hidden widths at 1/2, 1/4, 1/8
resolution) starts from the model's own g_s, keeping the channels whose outgoing weights are
largest, with the FiLM rows of those channels, and is trained on exact posterior samples of
random training crops at random qualities t to minimise the mean log MSE (the mean PSNR), so no
quality dominates. bf16 autocast where the CPU has native bf16 (``--bf16``).

State (weights, Adam, step) lives in ``~/.cache/bbimg/fast-synthesis/<model>/state.pt``, with a
held-out validation (PSNR of the light and of the full synthesis at t = 0.2 / 0.5 / 0.8) appended to
``validation.csv`` at every checkpoint. ``--export`` writes ``<model>.synthesis-fast.onnx`` beside
the model's weights, recording the model's weights hash (``bbimg.runtime`` uses it only for them).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bbimg.models import HierarchicalVAE, load_model  # noqa: E402
from bbimg.models.registry import config_from_dict  # noqa: E402
from bbimg.training.checkpoint import atomic_save  # noqa: E402
from bbimg.training.fast_synthesis import light_from, synthesis_parameters  # noqa: E402
from bbimg.training.data import load_image_set  # noqa: E402
from bbimg.training.options import DEFAULT_STATE_DIR  # noqa: E402

STATE_ROOT = DEFAULT_STATE_DIR.parent / "fast-synthesis"   # beside bbimg train's state
TRAIN = ROOT.parent / "shared" / "data" / "train"

@torch.no_grad()
def validate(teacher, student, crops: np.ndarray, qualities=(0.2, 0.5, 0.8)) -> dict:
    out = {}
    x_all = torch.from_numpy(crops).float().div(255)
    for t_val in qualities:
        light, full = [], []
        for i in range(0, len(x_all), 4):
            x = x_all[i:i + 4]
            t = torch.full((len(x),), t_val)
            torch.manual_seed(i)
            y = teacher.encode_y(x, teacher.films(t).analysis).sample()
            for m, acc in ((student, light), (teacher, full)):
                x_hat = m.decode(y, m.films(t).synthesis).clamp(0, 1)
                acc.append(10 * torch.log10(1 / (x_hat - x).pow(2).flatten(1).mean(1)))
        out[f"light@{t_val}"] = float(torch.cat(light).mean())
        out[f"full@{t_val}"] = float(torch.cat(full).mean())
    return out


def train(args) -> None:
    info, teacher = load_model(args.model)
    teacher = teacher.float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    state_dir = STATE_ROOT / args.model
    state_path = state_dir / "state.pt"
    torch.set_num_threads(args.threads)
    widths = tuple(int(w) for w in args.widths.split(","))
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        student = HierarchicalVAE(config_from_dict(state["config"]))
        student.load_state_dict(state["model"])
        step = state["step"]
    else:
        state, student, step = None, light_from(teacher, widths), 0
    params = synthesis_parameters(student)
    opt = torch.optim.Adam(params, lr=args.lr)
    if state:
        opt.load_state_dict(state["optimizer"])
    kw = dict(downscale=2, val_fraction=0.05, cache_dir=args.cache_dir)
    train_set = load_image_set([TRAIN], **kw)
    val = load_image_set([TRAIN], validation=True, **kw).fixed_crops(256, 16)
    rng = np.random.default_rng([args.seed, step])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    first, last_ckpt, last_log, ema = step, start, start, None

    def checkpoint() -> None:
        atomic_save({"config": vars(student.cfg), "model": student.state_dict(), "optimizer": opt.state_dict(),
                     "step": step, "teacher_sha256": info.sha256.hex(), "widths": widths}, state_path)
        row = {"step": step, **validate(teacher, student, val)}
        new = not (state_dir / "validation.csv").exists()
        with open(state_dir / "validation.csv", "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        print("validation " + " ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)

    state_dir.mkdir(parents=True, exist_ok=True)
    print(f"light g_s {widths} from {args.model}, step {step}, {len(train_set)} images", flush=True)
    while time.monotonic() < deadline:
        used = (time.monotonic() - start) / (deadline - start)
        lr = args.lr if used < 0.5 else args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * (used - 0.5) / 0.5))
        for g in opt.param_groups:
            g["lr"] = lr
        x = torch.from_numpy(train_set.random_crops(rng, args.batch, args.crop)).float().div_(255)
        t = torch.from_numpy(rng.random(args.batch)).float()
        with autocast:
            with torch.no_grad():
                y = teacher.encode_y(x, teacher.films(t).analysis).sample()
            x_hat = student.decode(y, student.films(t).synthesis).float()
        mse = (x_hat - x).pow(2).flatten(1).mean(1)
        loss = torch.log(mse).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        psnr = float((-10 * torch.log10(mse.detach())).mean())
        ema = psnr if ema is None else 0.98 * ema + 0.02 * psnr
        now = time.monotonic()
        if now - last_log >= 60:
            print(f"step {step} psnr {ema:.2f} lr {lr:.2e} ({(step - first) / (now - start):.2f} steps/s)", flush=True)
            last_log = now
        if now - last_ckpt >= 60 * args.checkpoint_minutes:
            checkpoint()
            last_ckpt = time.monotonic()
    checkpoint()


def export(args) -> None:
    from bbimg.models.onnx_export import export_fast_synthesis

    info, _ = load_model(args.model)
    state = torch.load(STATE_ROOT / args.model / "state.pt", weights_only=False)
    if state["teacher_sha256"] != info.sha256.hex():
        raise SystemExit("the light synthesis was trained for other weights of this model")
    light = HierarchicalVAE(config_from_dict(state["config"]))
    light.load_state_dict(state["model"])
    path = export_fast_synthesis(args.model, light, {"widths": ",".join(map(str, state["widths"])),
                                                     "step": state["step"]})
    print(f"{path}: {path.stat().st_size / 1e6:.2f} MB (step {state['step']}, widths {state['widths']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bbimg-hvae-v5")
    ap.add_argument("--widths", default="32,64,128", help="hidden widths of the light g_s at 1/2, 1/4, 1/8")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lr-min", type=float, default=2e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-minutes", type=float, default=10)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_STATE_DIR / "cache",
                    help="decoded training images (shared with bbimg train)")
    ap.add_argument("--export", action="store_true", help="write the ONNX part from the saved state and stop")
    args = ap.parse_args()
    export(args) if args.export else train(args)


if __name__ == "__main__":
    main()
