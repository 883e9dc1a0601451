"""Encoder effort levels: encode time spent for rate, in files today's decoder reads unchanged.

Like ``cwebp -m``, ``cjxl -e`` or ``avifenc -s``, a higher effort searches harder; the decoder
reads every effort's files the same way, at the same speed. Below the default, efforts 1-4 draw
fewer candidates per REC block (kappa 12-15 bits instead of 16: the header records it): the
candidate search, most of an encode, takes 2^(16 - kappa) times less work, and files come out a
little larger or worse (``bench/effort.py``; the model's side-information tables are fitted for
kappa 16, so the block plans cost a few bytes more too). Above it, two searches on the encoder's
own objective:

* posterior refinement (``bbimg.refine``): diagonal Newton steps on the means and log-scales of
  q(z) and q(y) of this image for KL bits + lambda(t) x distortion (Adam and a re-fit of q(y)
  against p(y | z) of the z the file carries are available; measured, they do not pay for their
  time). Lowers the rate at the same quality.
* decoder-aware candidate choice (``bbimg.candidate_search``): each block's candidate is chosen
  by the decoded image's error instead of latent distance alone. Same size, better quality.

Both need gradients through the model, so efforts above :data:`DEFAULT_EFFORT` import torch
(``pip install 'bbimg[torch]'``). Efforts up to the default are today's encoder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .defaults import DEFAULT_EFFORT
from .rec import DEFAULT_KAPPA
from .geometry import padded_size
from .tiling import THRESHOLD_PIXELS

__all__ = ["EffortSettings", "EFFORTS", "DEFAULT_EFFORT", "MIN_EFFORT", "MAX_EFFORT", "settings", "EncoderSearch"]

MIN_EFFORT, MAX_EFFORT = 1, 9


@dataclass(frozen=True)
class EffortSettings:
    refine_steps: int = 0          # optimiser steps on q(z), q(y)
    refine_lr: float = 0.0
    refine_y_steps: int = 0        # steps on q(y) against p(y | z as coded) (measured: does not pay)
    refine_y_lr: float = 0.0
    refine_optimizer: str = "newton"  # bbimg.refine.Settings.optimizer: "newton" or "adam"
    search_sweeps: int = 0         # decoder-aware choice: re-linearisations
    search_factors: tuple[float, ...] = (1.0,)  # multiples of default_beta(t) tried per sweep
    search_probes: int = 0         # random vectors for the curvature estimate
    kappa: int = DEFAULT_KAPPA     # index bits of a full REC block: 2^kappa candidates each

    @property
    def needs_torch(self) -> bool:
        return self.refine_steps > 0 or self.refine_y_steps > 0 or self.search_sweeps > 0


_TODAY = EffortSettings()
EFFORTS: dict[int, EffortSettings] = {
    1: EffortSettings(kappa=12), 2: EffortSettings(kappa=13), 3: EffortSettings(kappa=14),
    4: EffortSettings(kappa=15), 5: _TODAY,
    6: EffortSettings(search_sweeps=1, search_factors=(1.0,), search_probes=1),
    7: EffortSettings(refine_steps=3, refine_lr=0.5, search_sweeps=1, search_factors=(1.0,), search_probes=1),
    8: EffortSettings(refine_steps=6, refine_lr=0.5, search_sweeps=1, search_factors=(0.5, 1.0, 2.0), search_probes=2),
    9: EffortSettings(refine_steps=10, refine_lr=0.5, search_sweeps=1, search_factors=(0.5, 1.0, 2.0), search_probes=2),
}


def settings(effort: int) -> EffortSettings:
    if not (isinstance(effort, (int, np.integer)) and MIN_EFFORT <= effort <= MAX_EFFORT):
        raise ValueError(f"effort must be an integer in {MIN_EFFORT}..{MAX_EFFORT}, got {effort!r}")
    return EFFORTS[int(effort)]


class EncoderSearch:
    """The torch side of one encode at an effort above the default: the model's weights, the
    image as a tensor, the searches. Images tiled by the transforms (above 2048 x 2048 padded
    pixels) skip the searches that run the whole synthesis transform at once."""

    def __init__(self, model: str, device: str, pixels: np.ndarray, t: float, effort: EffortSettings, seed: int):
        from .transforms import require_torch
        torch = require_torch("effort above the default")
        from .models import load_model

        self._torch, self.effort, self.t, self.seed = torch, effort, t, seed
        _, self.net = load_model(model, device)
        self.pixels = pixels
        height, width = pixels.shape[:2]
        self.whole = np.prod(padded_size(height, width)) <= THRESHOLD_PIXELS
        self.device = torch.device(device)
        self._target = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]).to(
            self.device, torch.float32) / 255.0

    def refine(self, y_mean, y_scale, z_mean, z_scale):
        if not (self.whole and self.effort.refine_steps):
            return y_mean, y_scale, z_mean, z_scale
        from .refine import refine_posteriors
        return refine_posteriors(self.net, self.pixels, self.t, y_mean, y_scale, z_mean, z_scale,
                                 steps=self.effort.refine_steps, lr=self.effort.refine_lr, seed=self.seed,
                                 settings=self._settings())

    def refine_y(self, y_mean, y_scale, py_mean, py_scale):
        if not (self.whole and self.effort.refine_y_steps):
            return y_mean, y_scale
        from .refine import refine_y
        return refine_y(self.net, self.pixels, self.t, y_mean, y_scale, py_mean, py_scale,
                        steps=self.effort.refine_y_steps, lr=self.effort.refine_y_lr, seed=self.seed,
                        settings=self._settings())

    def _settings(self):
        """bbimg.refine's settings with this effort's optimiser."""
        from . import refine
        return dataclasses.replace(refine.SETTINGS, optimizer=self.effort.refine_optimizer)

    def chooser(self):
        """``choose`` for the y level's LatentCoder.compress, or None."""
        if not (self.whole and self.effort.search_sweeps):
            return None
        from .candidate_search import decoder_aware_choice, default_beta

        torch, net = self._torch, self.net
        films = net.films(torch.tensor([self.t], device=self.device))
        height, width = self.pixels.shape[:2]

        def synthesis(y):
            return net.decode(y, films.synthesis)[:, :, :height, :width]

        def choose(problem, indices):
            return decoder_aware_choice(problem, indices, synthesis, self._target, beta=default_beta(self.t),
                                        factors=self.effort.search_factors, sweeps=self.effort.search_sweeps,
                                        probes=self.effort.search_probes, seed=self.seed)

        return choose
