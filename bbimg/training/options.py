"""What a training run takes (``TrainOptions``), free of torch: ``bbimg train`` reads its option
defaults from these fields without importing the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrainOptions", "DEFAULT_STATE_DIR"]

DEFAULT_STATE_DIR = Path.home() / ".cache" / "bbimg" / "train"  # outside any work tree


@dataclass
class TrainOptions:
    """Every knob of a run; ``bbimg train`` takes its option defaults from here."""
    data: list[Path]
    state_dir: Path = DEFAULT_STATE_DIR  # full state (model + optimizer) lives here
    minutes: float | None = None         # wall-clock budget from the start of the run; None = until max_steps
    max_steps: int | None = None
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    lr_min: float | None = None          # cosine decay from lr to lr_min over the end of the budget
    decay_from: float = 0.65             # fraction of the budget after which the lr decays (with lr_min)
    warmup_steps: int = 0                # linear warm-up at the start of this run (fresh optimizer moments)
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
    equalize_above: float | None = None  # lambda; a sample's loss above it is divided by lambda / this
    parts_dir: Path | None = None        # also write each checkpoint as parts under 16 MiB here
