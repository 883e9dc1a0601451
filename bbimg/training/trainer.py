"""Resumable rate-distortion training of the VAE: loss = KL bits per pixel + lambda * MSE(0-255).

One loop for every machine: CPU or CUDA, single process or under ``torchrun`` (DistributedDataParallel,
gloo or nccl), to a step count or a wall-clock deadline. Only rank 0 writes checkpoints, the
validation log and the progress bar. A run on a lent GPU machine is the same loop with ``device``,
``minutes`` (the deadline), packed data (``data.pack_image_set``) and ``parts_dir`` (the state in
files small enough to come back; ``checkpoint.read_parts`` joins them).
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..models import HierarchicalVAE, VAEConfig, quality_to_lambda
from ..models.registry import config_from_dict
from .checkpoint import atomic_save, export_weights, load_checkpoint, save_checkpoint, training_state, write_parts
from .options import DEFAULT_STATE_DIR, TrainOptions

__all__ = ["TrainOptions", "Trainer", "train", "learning_rate", "save_checkpoint", "load_checkpoint", "rd_loss",
           "export_weights", "DEFAULT_STATE_DIR"]

_BAD_STEPS_BEFORE_RESTORE = 5


def rd_loss(model: HierarchicalVAE, x: torch.Tensor, t: torch.Tensor, dim_kl_cap: float | None = None,
            equalize_above: float | None = None):
    """Returns (loss, bpp per sample, mse per sample on the 0-255 scale).

    With ``equalize_above`` (a lambda) the loss of a sample whose lambda exceeds it is divided by
    lambda / equalize_above: at high lambdas the distortion term grows with lambda, and unscaled those
    samples would dominate the gradient of the weights every quality shares.

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
    loss = rate + lam * mse
    if equalize_above is not None:
        loss = loss / (lam / equalize_above).clamp_min(1.0)
    return loss.mean(), bpp.detach(), mse.detach()


def learning_rate(opts: TrainOptions, run_steps: int, budget_used: float) -> float:
    """Linear warm-up over the run's first ``warmup_steps``, then ``lr``; with ``lr_min``, a cosine
    decay to it once ``decay_from`` of the budget (time or steps) is spent."""
    if run_steps < opts.warmup_steps:
        return opts.lr * (run_steps + 1) / opts.warmup_steps
    if opts.lr_min is None or budget_used < opts.decay_from:
        return opts.lr
    u = min(1.0, (budget_used - opts.decay_from) / max(1e-9, 1 - opts.decay_from))
    return opts.lr_min + 0.5 * (opts.lr - opts.lr_min) * (1 + math.cos(math.pi * u))


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


# -- setup -------------------------------------------------------------------------------------------

def _setup_process(opts: TrainOptions) -> tuple[int, bool, torch.device]:
    """Join the torchrun process group when there is one; (rank, distributed, this rank's device)."""
    device = torch.device(opts.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True       # fixed crop size: the autotuned kernels are reused
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return rank, distributed, device


def _initial_state(state_path: Path, init: Path | None) -> dict | None:
    """The state to resume: ``state.pt`` if it exists, else the ``init`` weights (no optimizer), else None."""
    if state_path.exists():
        return load_checkpoint(state_path)
    if init is None:
        return None
    weights = load_checkpoint(init)
    return {"config": weights["config"], "model": {k: v.float() for k, v in weights["model"].items()},
            "step": weights.get("step", 0), "train_hours": weights.get("train_hours", 0.0)}


def _build_model(state: dict | None, opts: TrainOptions, device: torch.device):
    cfg = config_from_dict(state["config"]) if state else VAEConfig(**opts.model)
    torch.manual_seed(opts.seed)
    model = HierarchicalVAE(cfg).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    if state:
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
    return model, optimizer


def _load_data(opts: TrainOptions):
    """(training images, fixed 256² validation crops of the held-out images)."""
    from .data import load_image_set

    kw = dict(downscale=opts.downscale, val_fraction=opts.val_fraction,
              cache_dir=opts.cache_dir or Path(opts.state_dir) / "cache")
    train_set = load_image_set(opts.data, **kw)
    if len(train_set) == 0:
        raise ValueError(f"no training images found under {', '.join(map(str, opts.data))}")
    return train_set, load_image_set(opts.data, validation=True, **kw).fixed_crops(256, 16)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0, int(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


class Trainer:
    """One run of the loop: constructing it sets up (process group, model, optimizer, data, resumed
    state); ``step()`` takes one optimizer step; ``checkpoint()`` saves and validates; ``run()`` loops
    until the step count or the deadline and checkpoints at the end."""

    def __init__(self, opts: TrainOptions, log: Callable[[str], None] = print):
        self.opts, self.log = opts, log
        started = time.monotonic()
        self.deadline = None if opts.minutes is None else started + 60 * opts.minutes
        self.rank, self.distributed, self.device = _setup_process(opts)
        self.is_main = self.rank == 0
        self.state_path = Path(opts.state_dir) / "state.pt"
        state = _initial_state(self.state_path, opts.init)
        self.model, self.optimizer = _build_model(state, opts, self.device)
        self.step_count = state["step"] if state else 0
        self.first_step = self.step_count
        self.past_hours = state.get("train_hours", 0.0) if state else 0.0
        self.net = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.distributed else self.model)
        self.train_set, self.val_crops = _load_data(opts)
        self.rng = np.random.default_rng([opts.seed, self.rank, self.step_count])
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if opts.bf16
                         else contextlib.nullcontext())
        self.ema: torch.Tensor | None = None     # (loss, bpp, PSNR), kept on the device: no sync per step
        self.bad_steps = 0
        self.result: dict = {}
        self.loop_started = time.monotonic()

    # -- step ------------------------------------------------------------------------------------

    def budget_used(self) -> float:
        """Fraction of this run's step or time budget spent (the larger of the two)."""
        used = 0.0
        if self.opts.max_steps is not None and self.opts.max_steps > self.first_step:
            used = (self.step_count - self.first_step) / (self.opts.max_steps - self.first_step)
        if self.deadline is not None:
            now = time.monotonic()
            used = max(used, (now - self.loop_started) / max(1e-9, self.deadline - self.loop_started))
        return used

    def finished(self) -> bool:
        opts = self.opts
        done = ((opts.max_steps is not None and self.step_count >= opts.max_steps)
                or (self.deadline is not None and time.monotonic() >= self.deadline))
        if self.distributed:   # every rank stops at the same step
            flag = torch.tensor([int(done)], dtype=torch.int32, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done = bool(flag.item())
        return done

    def step(self) -> bool:
        """One optimizer step on fresh random crops; False when a non-finite loss or gradient skipped it."""
        opts = self.opts
        lr = learning_rate(opts, self.step_count - self.first_step, self.budget_used())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        crops = torch.from_numpy(self.train_set.random_crops(self.rng, opts.batch, opts.crop)).to(self.device)
        x = crops.float().div_(255).contiguous(memory_format=torch.channels_last)
        t = torch.from_numpy(self.rng.random(opts.batch)).float().to(self.device)
        with self.autocast:
            loss, bpp, mse = rd_loss(self.net, x, t, opts.dim_kl_cap, opts.equalize_above)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            self._skip_bad_step()
            return False
        self.bad_steps = 0
        self.optimizer.step()
        self.step_count += 1
        current = torch.stack([loss.detach().float(), bpp.mean(), 10 * torch.log10(255.0**2 / mse.mean().clamp_min(1e-9))])
        self.ema = current if self.ema is None else 0.98 * self.ema + 0.02 * current
        return True

    def _skip_bad_step(self) -> None:
        """A rare blow-up must not poison a run that lasts for days: skip the step, and after several in
        a row go back to the last checkpoint."""
        self.bad_steps += 1
        if self.bad_steps < _BAD_STEPS_BEFORE_RESTORE:
            return
        if not self.state_path.exists():
            raise RuntimeError(f"{self.bad_steps} non-finite steps in a row and no checkpoint to go back to")
        restored = load_checkpoint(self.state_path)
        self.model.load_state_dict(restored["model"])
        self.optimizer.load_state_dict(restored["optimizer"])
        self.step_count, self.bad_steps = restored["step"], 0
        self.log(f"non-finite loss: restored step {self.step_count}")

    # -- checkpoint ------------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        """Save the full state (and its parts), validate on the held-out crops, append to validation.csv."""
        if not self.is_main:
            return self.result
        hours = self.past_hours + (time.monotonic() - self.loop_started) / 3600
        state = training_state(self.model, self.optimizer, self.step_count, {"train_hours": hours})
        atomic_save(state, self.state_path)
        if self.opts.parts_dir is not None:
            write_parts(state, self.opts.parts_dir)
        if len(self.val_crops):
            self.result = validate(self.model, self.val_crops, self.device)
            self.result.update(step=self.step_count, train_hours=round(hours, 3))
            self._append_validation(self.result)
            self.log("validation " + " ".join(f"{k}={v:.4g}" for k, v in self.result.items()))
        return self.result

    def _append_validation(self, row: dict) -> None:
        path = Path(self.opts.state_dir) / "validation.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    # -- the loop --------------------------------------------------------------------------------

    def progress_fields(self) -> dict[str, str]:
        """Smoothed loss, bpp and PSNR, and the time left to the deadline (for the bar and the log)."""
        fields = {}
        if self.ema is not None:
            loss, bpp, psnr = self.ema.tolist()
            fields.update(loss=f"{loss:.4f}", bpp=f"{bpp:.4f}", psnr=f"{psnr:.2f}")
        if self.deadline is not None:
            fields["left"] = _clock(self.deadline - time.monotonic())
        return fields

    def run(self) -> dict:
        """Train until the step count or the deadline; returns the last validation figures."""
        opts = self.opts
        if self.is_main:
            self.log(f"training {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters from "
                     f"step {self.step_count} on {len(self.train_set)} images ({self.device}, "
                     f"{torch.get_num_threads()} threads)")
        bar = None
        if self.is_main and opts.progress:
            from tqdm import tqdm
            bar = tqdm(total=opts.max_steps, initial=self.step_count, unit=" step", file=sys.stderr,
                       dynamic_ncols=True, mininterval=1.0)
        last_checkpoint = last_report = time.monotonic()
        while not self.finished():
            if not self.step():
                continue
            now = time.monotonic()
            if bar is not None:
                bar.update(1)
                if now - last_report >= 1.0:   # reading the EMA waits for the device
                    last_report = now
                    bar.set_postfix(self.progress_fields(), refresh=False)
            elif self.is_main and now - last_report >= 60:
                last_report = now
                rate = (self.step_count - self.first_step) / (now - self.loop_started)
                self.log(f"step {self.step_count} " + " ".join(f"{k} {v}" for k, v in self.progress_fields().items())
                         + f" ({rate:.2f} steps/s)")
            if self.is_main and now - last_checkpoint >= opts.checkpoint_minutes * 60:
                self.checkpoint()
                last_checkpoint = time.monotonic()
        if bar is not None:
            bar.close()
        if self.step_count > self.first_step or not self.state_path.exists():
            self.checkpoint()
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()
        result = dict(self.result)
        if self.ema is not None:
            result.setdefault("train_loss", float(self.ema[0]))
        result.setdefault("step", self.step_count)
        return result


def train(opts: TrainOptions, log: Callable[[str], None] = print) -> dict:
    """Set up and run the loop (see ``Trainer``); returns the last validation figures."""
    return Trainer(opts, log).run()
