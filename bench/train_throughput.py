"""Training throughput (steps/s, Mpixel/s) of candidate model widths, crop sizes and CPU settings.

    python bench/train_throughput.py [--steps 6] [--threads N]

Writes bench/results/train_throughput.csv. Each configuration runs full optimizer steps (the trainer's
loss, ``rd_loss``) on random crop-sized tensors, so it measures the model and the backend, not the data
loader.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import time
from pathlib import Path

import torch

from bbimg.models import HierarchicalVAE, VAEConfig
from bbimg.training.trainer import rd_loss


def time_config(widths: tuple[int, int, int], latent: int, crop: int, batch: int, bf16: bool,
                channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = HierarchicalVAE(VAEConfig(widths=widths, latent_channels=latent))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop)
    t = torch.rand(batch)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with ctx:
            loss, _, _ = rd_loss(model, x, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/results/train_throughput.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    configs = [
        # (widths at 1/2, 1/4, 1/8 resolution, latent channels, crop, batch, bf16, channels_last)
        ((128, 128, 128), 192, 128, 8, False, False),
        ((128, 128, 128), 192, 128, 8, False, True),
        ((128, 128, 128), 192, 128, 8, True, True),
        ((96, 96, 96), 160, 128, 8, False, True),
        ((64, 128, 128), 160, 128, 8, False, True),
        ((64, 128, 128), 160, 256, 2, False, True),
        ((64, 128, 128), 160, 64, 32, False, True),
        ((64, 96, 128), 160, 128, 8, False, True),
        ((48, 96, 128), 160, 128, 8, False, True),
    ]
    for widths, lat, crop, batch, bf16, cl in configs:
        sec = time_config(widths, lat, crop, batch, bf16, cl, args.steps)
        mpx = batch * crop * crop / sec / 1e6
        row = dict(widths="/".join(map(str, widths)), latent=lat, crop=crop, batch=batch, bf16=bf16, channels_last=cl,
                   threads=args.threads, sec_per_step=round(sec, 4), steps_per_s=round(1 / sec, 3),
                   mpixel_per_s=round(mpx, 4))
        print(row, flush=True)
        rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
