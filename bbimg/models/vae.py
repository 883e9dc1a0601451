"""Two-level Gaussian VAE whose rate is the exact KL(q||p) that relative entropy coding pays."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import MODEL_STRIDE, padded_size
from .layers import QualityFiLM, SimpleGDN, conv, deconv

__all__ = ["HierarchicalVAE", "VAEConfig", "Films", "Gaussian", "gaussian_kl_bits", "quality_to_lambda", "pad_to_multiple",
           "ForwardResult"]

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 5.0


@dataclass(frozen=True)
class VAEConfig:
    widths: tuple[int, int, int] = (64, 128, 128)  # hidden widths at 1/2, 1/4, 1/8 resolution
    latent_channels: int = 160   # M: channels of y (1/16 resolution)
    hyper_width: int = 128       # hidden width of the hyper transforms
    hyper_channels: int = 96     # channels of z (1/64 resolution)
    latent_gain: float = 8.0     # latents = gain * transform output: starts training at a useful SNR
    lambda_min: float = 0.0008   # lambda (per MSE on the 0-255 scale) at quality t = 0
    lambda_max: float = 0.08     # ... and at t = 1
    film_t_scale: float = 1.0    # the FiLM sees t * film_t_scale: a model whose lambda range was widened
                                 # upward from a trained one keeps that model's conditioning at the lambdas
                                 # both cover (tools/widen_range.py)

    @property
    def stride(self) -> int:
        return MODEL_STRIDE


@dataclass
class Gaussian:
    mean: torch.Tensor
    log_scale: torch.Tensor

    @property
    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)

    def sample(self) -> torch.Tensor:
        return self.mean + self.scale * torch.randn_like(self.mean)


def _split_gaussian(params: torch.Tensor, gain: float = 1.0, scale_gain: float = 1.0) -> Gaussian:
    mean, log_scale = params.float().chunk(2, dim=1)   # fp32 under bf16 autocast: the KL is the rate
    if gain != 1.0:
        mean = mean * gain
    if scale_gain != 1.0:
        log_scale = log_scale + math.log(scale_gain)
    return Gaussian(mean, log_scale.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX))


def gaussian_kl_bits(q: Gaussian, p: Gaussian) -> torch.Tensor:
    """Elementwise KL(q || p) in bits for diagonal Gaussians."""
    var_ratio = torch.exp(2.0 * (q.log_scale - p.log_scale))
    mahal = ((q.mean - p.mean) * torch.exp(-p.log_scale)) ** 2
    nats = 0.5 * (var_ratio + mahal - 1.0) - (q.log_scale - p.log_scale)
    return nats / math.log(2.0)


def quality_to_lambda(t: torch.Tensor, cfg: VAEConfig) -> torch.Tensor:
    """Quality t in [0, 1] -> lambda, log-linearly."""
    lo, hi = math.log(cfg.lambda_min), math.log(cfg.lambda_max)
    return torch.exp(lo + t * (hi - lo))


@dataclass
class ForwardResult:
    x_hat: torch.Tensor
    kl_y: torch.Tensor   # bits, shape (B,)
    kl_z: torch.Tensor   # bits, shape (B,)
    kl_excess: torch.Tensor | None = None  # bits above the per-dimension cap, shape (B,)


class Films(NamedTuple):
    """The quality-dependent FiLM (gain, bias) pairs of each transform, for one quality t."""

    analysis: tuple          # g_a's three hidden layers
    synthesis: tuple         # g_s's three hidden layers
    hyper_analysis: tuple    # h_a's two hidden layers
    hyper_synthesis: tuple   # h_s's two hidden layers: the y prior p(y | z)
    z_prior: tuple           # the factorised z prior's parameters


class HierarchicalVAE(nn.Module):
    """y at 1/16 and z at 1/64 with q(z|x) against a learned factorised Gaussian p(z | t) and
    q(y|x) against p(y | z) where z is the *sample* the decoder will have, exactly as coded."""

    def __init__(self, cfg: VAEConfig = VAEConfig()):
        super().__init__()
        self.cfg = cfg
        (w1, w2, w3), m = cfg.widths, cfg.latent_channels
        n, k = cfg.hyper_width, cfg.hyper_channels
        self.g_a = nn.ModuleList([conv(3, w1), conv(w1, w2), conv(w2, w3), conv(w3, 2 * m)])
        self.g_a_act = nn.ModuleList([SimpleGDN(w1), SimpleGDN(w2), SimpleGDN(w3)])
        self.g_s = nn.ModuleList([deconv(m, w3), deconv(w3, w2), deconv(w2, w1), deconv(w1, 3)])
        self.g_s_act = nn.ModuleList([SimpleGDN(w, inverse=True) for w in (w3, w2, w1)])
        self.h_a = nn.ModuleList([conv(m, n, 3, 1), conv(n, n), conv(n, 2 * k)])
        self.h_s = nn.ModuleList([deconv(k, n), deconv(n, n), conv(n, 2 * m, 3, 1)])
        # FiLM for: g_a hidden, g_s hidden, h_a hidden (2n), h_s hidden (2n), z prior (2k)
        self.film = QualityFiLM([w1, w2, w3, w3, w2, w1] + [n] * 4 + [2 * k])
        self.z_prior_params = nn.Parameter(torch.zeros(1, 2 * k, 1, 1))

    # -- transforms ---------------------------------------------------------------------------
    def films(self, t: torch.Tensor) -> Films:
        f = self.film(t * self.cfg.film_t_scale if self.cfg.film_t_scale != 1.0 else t)
        return Films(f[0:3], f[3:6], f[6:8], f[8:10], f[10])

    def encode_y(self, x: torch.Tensor, film) -> Gaussian:
        h = x
        for i, layer in enumerate(self.g_a):
            h = layer(h)
            if i < 3:
                g, b = film[i]
                h = self.g_a_act[i](h) * g + b
        return _split_gaussian(h, self.cfg.latent_gain)

    @staticmethod
    def _hyper_stack(layers: nn.ModuleList, h: torch.Tensor, film) -> torch.Tensor:
        """A hyper transform: its layers with a FiLM-modulated leaky ReLU between them."""
        for i, layer in enumerate(layers):
            h = layer(h)
            if i < len(layers) - 1:
                g, b = film[i]
                h = F.leaky_relu(h, 0.1) * g + b
        return h

    def encode_z(self, y_mean: torch.Tensor, film) -> Gaussian:
        return _split_gaussian(self._hyper_stack(self.h_a, y_mean / self.cfg.latent_gain, film), self.cfg.latent_gain)

    def prior_z(self, film_z, shape) -> Gaussian:
        g, b = film_z
        params = self.z_prior_params * g + b
        params = params.expand(shape[0], -1, shape[2], shape[3])
        return _split_gaussian(params, self.cfg.latent_gain, self.cfg.latent_gain)

    def prior_y(self, z: torch.Tensor, film) -> Gaussian:
        h = self._hyper_stack(self.h_s, z / self.cfg.latent_gain, film)
        return _split_gaussian(h, self.cfg.latent_gain, self.cfg.latent_gain)

    def decode(self, y: torch.Tensor, film) -> torch.Tensor:
        h = y / self.cfg.latent_gain
        for i, layer in enumerate(self.g_s):
            if i > 0:
                g, b = film[i - 1]
                h = self.g_s_act[i - 1](h * g + b)
            h = layer(h)
        return h

    # -- training -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, dim_kl_cap: float | None = None) -> ForwardResult:
        """x in [0, 1], shape (B, 3, H, W) with H, W multiples of 64; t in [0, 1], shape (B,).

        ``dim_kl_cap``: also return the KL bits by which single latent dimensions exceed it (REC
        codes a block of 2^kappa candidates, at least one dimension, so bits a dimension holds
        beyond ~kappa cannot be delivered)."""
        films = self.films(t)
        qy = self.encode_y(x, films.analysis)
        qz = self.encode_z(qy.mean, films.hyper_analysis)
        z = qz.sample()
        pz = self.prior_z(films.z_prior, z.shape)
        py = self.prior_y(z, films.hyper_synthesis)
        y = qy.sample()
        x_hat = self.decode(y, films.synthesis)
        kl_y_dims = gaussian_kl_bits(qy, py).flatten(1)
        kl_z_dims = gaussian_kl_bits(qz, pz).flatten(1)
        excess = None
        if dim_kl_cap is not None:
            excess = sum((d - dim_kl_cap).clamp_min(0).sum(1) for d in (kl_y_dims, kl_z_dims))
        return ForwardResult(x_hat, kl_y_dims.sum(1), kl_z_dims.sum(1), excess)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom/right so H and W are multiples of ``multiple`` (crop back after)."""
    h, w = x.shape[-2:]
    padded_h, padded_w = padded_size(h, w, multiple)
    if (padded_h, padded_w) == (h, w):
        return x
    return F.pad(x, (0, padded_w - w, 0, padded_h - h), mode="replicate")
