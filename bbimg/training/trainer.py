"""Resumable rate-distortion training of the VAE: loss = KL bits per pixel + lambda * MSE(0-255).

Runs on CPU or CUDA, single process or under ``torchrun`` (DistributedDataParallel, gloo or nccl).
Only rank 0 writes checkpoints, the validation log and the progress bar.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..models import HierarchicalVAE, VAEConfig, quality_to_lambda
from ..models.registry import config_from_dict

__all__ = ["TrainOptions", "train", "save_checkpoint", "load_checkpoint", "rd_loss", "export_weights"]


@dataclass
class TrainOptions:
    data: list[Path]
    state_dir: Path                      # full state (model + optimizer) lives here
    minutes: float | None = None         # wall-clock budget; None = until max_steps
    max_steps: int | None = None
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    threads: int | None = None
    bf16: bool = False
    device: str = "cpu"
    checkpoint_minutes: float = 5.0
    downscale: int = 2
    val_fraction: float = 0.05
    seed: int = 0
    init: Path | None = None              # weights (or checkpoint) to start from when no state exists
    model: dict = field(default_factory=dict)  # VAEConfig overrides for a fresh model
    progress: bool = True
    cache_dir: Path | None = None
    dim_kl_cap: float | None = None      # bits; KL a single latent dimension holds above it is charged twice


def rd_loss(model: HierarchicalVAE, x: torch.Tensor, t: torch.Tensor, dim_kl_cap: float | None = None):
    """Returns (loss, bpp per sample, mse per sample on the 0-255 scale).

    With ``dim_kl_cap`` the bits single dimensions hold above the cap are charged once more: REC
    cannot deliver them (a block is at least one dimension and carries ~kappa bits), so the model
    should spread its information instead (measured: dimensions of 100-400 bits cost the shipped
    model ~2 dB between ideal and coded quality). The reported bpp stays the exact KL."""
    out = model(x, t, dim_kl_cap)
    pixels = x.shape[2] * x.shape[3]
    bpp = (out.kl_y + out.kl_z) / pixels
    mse = ((out.x_hat.float() - x) * 255.0).pow(2).flatten(1).mean(1)
    lam = quality_to_lambda(t, model.cfg if not hasattr(model, "module") else model.module.cfg)
    rate = bpp if out.kl_excess is None else bpp + out.kl_excess / pixels
    return (rate + lam * mse).mean(), bpp.detach(), mse.detach()


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, model: HierarchicalVAE, optimizer, step: int, extra: dict | None = None) -> None:
    _atomic_save({"format": "bbimg-train-state/1", "config": dataclasses.asdict(model.cfg),
                  "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                  **(extra or {})}, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def export_weights(state: dict, path: Path, *, half: bool = True) -> None:
    """Shippable weights: config, step and fp16 tensors, never optimizer state."""
    tensors = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["model"].items()}
    _atomic_save({"format": "bbimg-weights/1", "config": state["config"], "step": state["step"],
                  "model": tensors, "train_hours": state.get("train_hours", 0.0)}, path)


@torch.no_grad()
def validate(model: HierarchicalVAE, crops: np.ndarray, device, qualities=(0.2, 0.5, 0.8)) -> dict:
    model.eval()
    torch.manual_seed(0)
    x = torch.from_numpy(crops).float().div(255).to(device)
    res = {}
    for t_val in qualities:
        bpps, psnrs = [], []
        for i in range(0, len(x), 4):
            xb = x[i:i + 4]
            t = torch.full((len(xb),), t_val, device=device)
            _, bpp, mse = rd_loss(model, xb, t)
            bpps.append(bpp)
            psnrs.append(10 * torch.log10(255.0**2 / mse))
        res[f"bpp@{t_val}"] = float(torch.cat(bpps).mean())
        res[f"psnr@{t_val}"] = float(torch.cat(psnrs).mean())
    model.train()
    return res


def train(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Train until the time or step budget is spent; returns the last validation figures."""
    from .data import load_image_set

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        backend = "nccl" if opts.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        rank = dist.get_rank()
        if opts.device.startswith("cuda"):
            opts.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    is_main = rank == 0
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)

    state_path = Path(opts.state_dir) / "state.pt"
    state = None
    if state_path.exists():
        state = load_checkpoint(state_path)
    elif opts.init is not None:
        state = load_checkpoint(opts.init)
        state = {"config": state["config"], "model": {k: v.float() for k, v in state["model"].items()},
                 "step": state.get("step", 0), "train_hours": state.get("train_hours", 0.0)}
    cfg = config_from_dict(state["config"]) if state else VAEConfig(**opts.model)
    torch.manual_seed(opts.seed)
    model = HierarchicalVAE(cfg).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    step, train_hours = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = opts.lr
        step, train_hours = state["step"], state.get("train_hours", 0.0)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    cache = opts.cache_dir or Path(opts.state_dir) / "cache"
    train_set = load_image_set(opts.data, downscale=opts.downscale, val_fraction=opts.val_fraction,
                               cache_dir=cache)
    if len(train_set) == 0:
        raise ValueError(f"no training images found under {', '.join(map(str, opts.data))}")
    val_crops = load_image_set(opts.data, downscale=opts.downscale, validation=True,
                               val_fraction=opts.val_fraction, cache_dir=cache).fixed_crops(256, 16)
    rng = np.random.default_rng([opts.seed, rank, step])
    if is_main:
        log(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters from step {step} "
            f"on {len(train_set)} images ({device}, {torch.get_num_threads()} threads)")

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if opts.bf16
                else contextlib.nullcontext())
    bar = None
    if is_main and opts.progress:
        from tqdm import tqdm
        bar = tqdm(total=opts.max_steps, initial=step if opts.max_steps else 0, unit="step",
                   dynamic_ncols=True, mininterval=2.0)
    start = last_ckpt = last_log = time.monotonic()
    session_start_step = step
    ema = None
    bad_steps = 0
    result: dict = {}

    def checkpoint() -> None:
        nonlocal result
        if not is_main:
            return
        hours = train_hours + (time.monotonic() - start) / 3600
        save_checkpoint(state_path, model, optimizer, step, {"train_hours": hours})
        if len(val_crops):
            result = validate(model, val_crops, device)
            result.update(step=step, train_hours=round(hours, 3))
            log_path = Path(opts.state_dir) / "validation.csv"
            new = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(result))
                if new:
                    w.writeheader()
                w.writerow(result)
            log("validation " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))

    while True:
        elapsed_min = (time.monotonic() - start) / 60
        done = (opts.max_steps is not None and step >= opts.max_steps) or \
               (opts.minutes is not None and elapsed_min >= opts.minutes)
        if distributed:
            flag = torch.tensor([int(done)], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done = bool(flag.item())
        if done:
            break
        x = torch.from_numpy(train_set.random_crops(rng, opts.batch, opts.crop)).to(device)
        x = x.float().div_(255)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.from_numpy(rng.random(opts.batch)).float().to(device)
        with autocast:
            loss, bpp, mse = rd_loss(net, x, t, opts.dim_kl_cap)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            # A rare blow-up must not poison a run that lasts for days: skip the step, and after
            # several in a row go back to the last checkpoint.
            bad_steps += 1
            if bad_steps >= 5 and state_path.exists():
                restored = load_checkpoint(state_path)
                model.load_state_dict(restored["model"])
                optimizer.load_state_dict(restored["optimizer"])
                step, bad_steps = restored["step"], 0
                log(f"non-finite loss: restored step {step}")
            continue
        bad_steps = 0
        optimizer.step()
        step += 1
        cur = (float(loss.detach()), float(bpp.mean()), float(10 * math.log10(255**2 / max(float(mse.mean()), 1e-9))))
        ema = cur if ema is None else tuple(0.98 * a + 0.02 * b for a, b in zip(ema, cur))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ema[0]:.3f}", bpp=f"{ema[1]:.3f}", psnr=f"{ema[2]:.2f}", refresh=False)
        if is_main and bar is None and time.monotonic() - last_log >= 60:
            last_log = time.monotonic()
            rate = (step - session_start_step) / (last_log - start)
            log(f"step {step} loss {ema[0]:.4f} bpp {ema[1]:.4f} psnr {ema[2]:.2f} ({rate:.2f} steps/s)")
        if is_main and time.monotonic() - last_ckpt >= opts.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.monotonic()
    if bar is not None:
        bar.close()
    if step > session_start_step or not state_path.exists():
        checkpoint()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if ema is not None:
        result.setdefault("train_loss", ema[0])
    result.setdefault("step", step)
    return result
