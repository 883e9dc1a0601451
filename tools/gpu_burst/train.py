"""One-shot GPU training burst: start from shipped weights, train until a deadline, write fp32 weights
(split under 16 MiB per file) and bf16 Adam moments to $OUT. Data: JPEG q92 copies of the
training split (downscale 2) in $DATA (default .gpu/data; tools/gpu_burst/pack_data.py).

usage: INIT=bbimg/weights/<model>.pt python tools/gpu_burst/train.py SECONDS [BATCH] [CROP]
(env: LR_MAX, LR_MIN, WARMUP, DECAY_FROM, DIM_KL_CAP, SAVE_EVERY; writes to $OUT)
"""
import glob
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.getcwd())
from bbimg.models import HierarchicalVAE  # noqa: E402
from bbimg.models.registry import config_from_dict  # noqa: E402
from bbimg.training.trainer import load_checkpoint, rd_loss  # noqa: E402

t0 = time.monotonic()
seconds = float(sys.argv[1])
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
crop = int(sys.argv[3]) if len(sys.argv) > 3 else 256
init = os.environ["INIT"]
out = os.environ.get("OUT", "/tmp/gpu_out")
os.makedirs(out, exist_ok=True)
lr_max, lr_min = float(os.environ.get("LR_MAX", 3e-4)), float(os.environ.get("LR_MIN", 3e-5))
warmup, cap = int(os.environ.get("WARMUP", 300)), float(os.environ.get("DIM_KL_CAP", 8.0))
# fraction of the time budget after which lr decays (cosine) to lr_min
decay_from = float(os.environ.get("DECAY_FROM", 0.65))

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
print("device", dev, torch.__version__, torch.cuda.get_device_name() if dev.type == "cuda" else "", flush=True)


def load(path):
    im = np.asarray(Image.open(path).convert("RGB"))
    h, w = im.shape[:2]
    if h < crop or w < crop:
        im = np.pad(im, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
    return im


files = sorted(glob.glob(os.path.join(os.environ.get("DATA", ".gpu/data"), "*.jpg")))
with ThreadPoolExecutor(16) as pool:
    arrays = list(pool.map(load, files))
images = [torch.from_numpy(a.copy()).to(dev) for a in arrays]
areas = torch.tensor([a.shape[0] * a.shape[1] for a in arrays], dtype=torch.float64)
print(f"{len(images)} images, {areas.sum() / 1e6:.1f} MP loaded in {time.monotonic() - t0:.1f}s", flush=True)

state = load_checkpoint(init)
cfg = config_from_dict(state["config"])
model = HierarchicalVAE(cfg).to(dev).to(memory_format=torch.channels_last)
model.load_state_dict({k: v.float() for k, v in state["model"].items()})
start_step = int(state["step"])
opt = torch.optim.Adam(model.parameters(), lr=lr_max)
gen = torch.Generator().manual_seed(1)


def crops():
    picks = torch.multinomial(areas, batch, replacement=True, generator=gen).tolist()
    rnd = torch.rand(batch, 3, generator=gen).tolist()
    xs = []
    for k, (a, b, f) in zip(picks, rnd):
        im = images[k]
        h, w = im.shape[:2]
        top, left = int(a * (h - crop + 1)), int(b * (w - crop + 1))
        p = im[top:top + crop, left:left + crop]
        xs.append(p.flip(1) if f < 0.5 else p)
    x = torch.stack(xs).permute(0, 3, 1, 2).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last)


def save(final):
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    keys = list(sd)
    half = len(keys) // 2
    meta = {"config": state["config"], "step": step, "start_step": start_step, "batch": batch, "crop": crop,
            "gpu_seconds": time.monotonic() - t_train, "dim_kl_cap": cap,
            "train_hours": state.get("train_hours", 0.0)}
    for name, part in (("model_a.pt", keys[:half]), ("model_b.pt", keys[half:])):
        torch.save({k: sd[k] for k in part}, os.path.join(out, name + ".tmp"))
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    torch.save(meta, os.path.join(out, "meta.pt"))
    if final:
        for slot in ("exp_avg", "exp_avg_sq"):
            mom = {n: opt.state[p][slot].to(torch.bfloat16).cpu() for n, p in model.named_parameters()
                   if p in opt.state}
            torch.save(mom, os.path.join(out, f"adam_{slot}.pt"))


step = start_step
t_train = time.monotonic()
deadline = t0 + seconds
last_log = last_save = t_train
ema = None
bad = 0
while True:
    now = time.monotonic()
    if now >= deadline:
        break
    frac = (now - t_train) / max(1.0, deadline - t_train)
    k = step - start_step
    if k < warmup:
        lr = lr_max * (k + 1) / warmup
    elif frac < decay_from:
        lr = lr_max
    else:
        u = (frac - decay_from) / (1 - decay_from)
        lr = lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * u))
    for g in opt.param_groups:
        g["lr"] = lr
    x = crops()
    t = torch.rand(batch, device=dev)
    loss, bpp, mse = rd_loss(model, x, t, cap)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if not (torch.isfinite(loss) and torch.isfinite(gn)):
        bad += 1
        if bad > 50:
            print("too many non-finite steps; stopping", flush=True)
            break
        continue
    opt.step()
    step += 1
    cur = torch.stack([loss.detach(), bpp.mean(), 10 * torch.log10(255.0**2 / mse.mean())])
    ema = cur if ema is None else 0.98 * ema + 0.02 * cur
    now = time.monotonic()
    if now - last_log >= 20:
        last_log = now
        e = ema.tolist()
        print(f"step {step} (+{step - start_step}) loss {e[0]:.4f} bpp {e[1]:.4f} psnr {e[2]:.2f} lr {lr:.2e} "
              f"{(step - start_step) / (now - t_train):.2f} steps/s t={now - t0:.0f}s", flush=True)
    if now - last_save >= float(os.environ.get("SAVE_EVERY", 120)):
        last_save = now
        save(False)
save(True)
print(f"done: step {step} (+{step - start_step}) in {time.monotonic() - t_train:.0f}s of training", flush=True)
