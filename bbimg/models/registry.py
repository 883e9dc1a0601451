"""Named, shipped models: weights live in ``bbimg/weights/<name>.pt`` (fp16, no optimizer state).

Files name the model, never a position in a list; the decoder checks the weights' hash recorded in
each .bbi file, so a file is never silently decoded with different weights.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model_files import DEFAULT_MODEL, find_weights, search_path, weights_dir
from .vae import HierarchicalVAE, VAEConfig

__all__ = ["DEFAULT_MODEL", "ModelInfo", "available_models", "load_model", "weights_dir", "config_from_dict"]

_cache: dict[str, tuple["ModelInfo", HierarchicalVAE]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    sha256: bytes
    step: int
    train_hours: float
    config: VAEConfig


def config_from_dict(d: dict) -> VAEConfig:
    d = dict(d)
    if "widths" in d:
        d["widths"] = tuple(d["widths"])
    return VAEConfig(**d)


def available_models() -> list[str]:
    return sorted({p.stem for folder in search_path() for p in folder.glob("*.pt")})


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device = "cpu",
               path: Path | None = None) -> tuple[ModelInfo, HierarchicalVAE]:
    """The model in eval mode (fp32) and its identity; cached per (name, device, weights file and
    its modification time: a file replaced under a name is loaded again), thread-safe."""
    if path is None:
        # A name comes from .bbi files too: find_weights never lets it pick a path outside the
        # model folders.
        path = find_weights(name) or weights_dir() / f"{name}.pt"
    path = Path(path)
    if not path.is_file():
        known = ", ".join(available_models()) or "none"
        raise ValueError(f"unknown model {name!r} (available: {known})")
    key = f"{name}@{device}@{path}@{path.stat().st_mtime_ns}"
    with _lock:
        if key in _cache:
            return _cache[key]
        raw = path.read_bytes()
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = config_from_dict(state["config"])
        model = HierarchicalVAE(cfg)
        model.load_state_dict({k: v.float() for k, v in state["model"].items()})
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        info = ModelInfo(name, path, hashlib.sha256(raw).digest(), int(state.get("step", 0)),
                         float(state.get("train_hours", 0.0)), cfg)
        _cache[key] = (info, model)
        return info, model
