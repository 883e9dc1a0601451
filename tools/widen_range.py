"""Widen a model's lambda range upward: weights to start a fine-tune from (``bbimg train --init``).

    python tools/widen_range.py bbimg/weights/bbimg-hvae-v5.pt --lambda-max 0.64 OUT.pt

Quality t in [0, 1] maps log-linearly to [lambda_min, lambda_max]. With a larger lambda_max the
same tensors get ``film_t_scale`` = log(new / min) / log(old / min), so the FiLM network sees the
same input at every lambda the old range covered: before any training the new model decodes like
the old one there, and the qualities above it start from the FiLM's extrapolation.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bbimg.training.checkpoint import export_weights, load_checkpoint  # noqa: E402


def widen(weights: dict, lambda_max: float) -> dict:
    cfg = dict(weights["config"])
    lo, old_hi = cfg["lambda_min"], cfg["lambda_max"]
    if lambda_max <= old_hi:
        raise ValueError(f"--lambda-max {lambda_max} does not widen the range (it ends at {old_hi})")
    old_scale = cfg.get("film_t_scale", 1.0)
    cfg["film_t_scale"] = old_scale * math.log(lambda_max / lo) / math.log(old_hi / lo)
    cfg["lambda_max"] = lambda_max
    return {**weights, "config": cfg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--lambda-max", type=float, required=True)
    args = parser.parse_args()
    state = widen(load_checkpoint(args.weights), args.lambda_max)
    export_weights(state, args.out, half=False)
    print(f"{args.out}: lambda {state['config']['lambda_min']}..{args.lambda_max}, "
          f"film_t_scale {state['config']['film_t_scale']:.4f}, step {state['step']}")


if __name__ == "__main__":
    main()
