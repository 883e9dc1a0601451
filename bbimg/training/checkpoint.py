"""Training state on disk: the full state (``state.pt``), shippable weights, and the same state split
into small parts that can leave a machine returning only files under 16 MiB (a lent GPU machine).

``state.pt``: ``{"format": "bbimg-train-state/1", "config", "model", "optimizer", "step", "train_hours", ...}``.
Weights (what the model registry loads): ``{"format": "bbimg-weights/1", "config", "step", "model" (fp16),
"train_hours"}``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

__all__ = ["STATE_FORMAT", "training_state", "save_checkpoint", "load_checkpoint", "export_weights", "write_parts", "read_parts",
           "PART_BYTES"]

STATE_FORMAT = "bbimg-train-state/1"
WEIGHTS_FORMAT = "bbimg-weights/1"
PART_BYTES = 15 * 2**20    # under the 16 MiB a lent machine returns per file
_TENSOR_OVERHEAD = 1024    # bytes torch.save adds per tensor (zip entry, alignment, pickled name), rounded up
_PARTS_META = "meta.pt"


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves a truncated state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def training_state(model: torch.nn.Module, optimizer, step: int, extra: dict | None = None) -> dict:
    """The full state, as ``state.pt`` holds it."""
    return {"format": STATE_FORMAT, "config": dataclasses.asdict(model.cfg), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "step": step, **(extra or {})}


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, step: int, extra: dict | None = None) -> None:
    atomic_save(training_state(model, optimizer, step, extra), path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def export_weights(state: dict, path: Path, *, half: bool = True) -> None:
    """Shippable weights: config, step and fp16 tensors, never optimizer state."""
    tensors = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["model"].items()}
    atomic_save({"format": WEIGHTS_FORMAT, "config": state["config"], "step": state["step"],
                 "model": tensors, "train_hours": state.get("train_hours", 0.0)}, path)


def _is_moment(value) -> bool:
    return torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1


def write_parts(state: dict, folder: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Write ``state`` as ``part-NN.pt`` files of at most ~``part_bytes`` each plus ``meta.pt``.

    Model tensors stay fp32; optimizer moments are stored in bf16 (half the bytes; Adam's moments are
    estimates, and a resumed run re-averages them within a few hundred steps). Every part records the
    step, so parts of two different checkpoints are never joined."""
    folder = Path(folder)
    tensors = {("model", k): (v.detach().float() if v.is_floating_point() else v).cpu()
               for k, v in state["model"].items()}
    optimizer = state.get("optimizer")
    slots: dict = {}
    if optimizer is not None:
        for index, entry in optimizer["state"].items():
            slots[index] = {}
            for slot, value in entry.items():
                if _is_moment(value):
                    tensors[("optimizer", index, slot)] = value.detach().to(torch.bfloat16).cpu()
                else:
                    slots[index][slot] = value
    parts: list[dict] = [{}]
    size = 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size() + _TENSOR_OVERHEAD
        if parts[-1] and size + nbytes > part_bytes:
            parts.append({})
            size = 0
        parts[-1][key] = value
        size += nbytes
    paths = [folder / f"part-{i:02d}.pt" for i in range(len(parts))]
    for path, part in zip(paths, parts):
        atomic_save({"step": state["step"], "tensors": part}, path)
    meta = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    if optimizer is not None:
        meta["optimizer"] = {"param_groups": optimizer["param_groups"], "state": slots}
    meta["parts"] = [p.name for p in paths]
    atomic_save(meta, folder / _PARTS_META)
    for stale in folder.glob("part-*.pt"):
        if stale not in paths:
            stale.unlink()
    return [*paths, folder / _PARTS_META]


def read_parts(folder: Path) -> dict:
    """The state ``write_parts`` wrote (moments back in fp32), in the layout of ``state.pt``."""
    folder = Path(folder)
    meta = load_checkpoint(folder / _PARTS_META)
    model: dict = {}
    optimizer = meta.pop("optimizer", None)
    for name in meta.pop("parts"):
        part = load_checkpoint(folder / name)
        if part["step"] != meta["step"]:
            raise ValueError(f"{folder / name} is from step {part['step']}, {_PARTS_META} from step {meta['step']}")
        for key, value in part["tensors"].items():
            if key[0] == "model":
                model[key[1]] = value
            else:
                optimizer["state"][key[1]][key[2]] = value.float()
    state = {**meta, "model": model}
    if optimizer is not None:
        state["optimizer"] = optimizer
    return state
