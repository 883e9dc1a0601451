"""Merge a GPU burst's output (fp32 weights in two parts, bf16 Adam moments) into a `bbimg train` state.

    python tools/gpu_burst/merge.py BURST_OUT_DIR ~/.cache/bbimg/train/state.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bbimg.models import HierarchicalVAE  # noqa: E402
from bbimg.models.registry import config_from_dict  # noqa: E402
from bbimg.training.trainer import save_checkpoint  # noqa: E402


def main(src: Path, dst: Path) -> None:
    meta = torch.load(src / "meta.pt", weights_only=False)
    model = HierarchicalVAE(config_from_dict(meta["config"]))
    model.load_state_dict({**torch.load(src / "model_a.pt"), **torch.load(src / "model_b.pt")})
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    first, second = torch.load(src / "adam_exp_avg.pt"), torch.load(src / "adam_exp_avg_sq.pt")
    steps = float(meta["step"] - meta["start_step"])
    for name, p in model.named_parameters():
        if name in first:
            opt.state[p] = {"step": torch.tensor(steps), "exp_avg": first[name].float(),
                            "exp_avg_sq": second[name].float()}
    note = f"GPU burst: {int(steps)} steps of batch {meta['batch']} x {meta['crop']}^2 from step {meta['start_step']}"
    save_checkpoint(dst, model, opt, meta["step"], {"train_hours": meta["train_hours"],
                                                    "gpu_seconds": meta["gpu_seconds"], "gpu_note": note})
    print(f"wrote {dst}: step {meta['step']} ({note})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
