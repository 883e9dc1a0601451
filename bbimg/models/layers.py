"""Building blocks shared by the VAE's transforms."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SimpleGDN", "QualityFiLM", "conv", "deconv"]


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              output_padding=stride - 1)


class SimpleGDN(nn.Module):
    """Simplified (inverse) GDN, y = x / (beta + gamma |x|) (Johnston et al. 2019).

    Divisive normalisation is the classic nonlinearity of learned image codecs and, in its L1 form,
    costs a 1x1 convolution: much cheaper than the residual blocks it competes with on a CPU.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.abs() + 1e-6
        norm = F.conv2d(x.abs(), self.gamma.abs(), beta)
        return x * norm if self.inverse else x / norm



class QualityFiLM(nn.Module):
    """Per-sample channel gain and bias computed from the rate-distortion trade-off.

    One network then covers every rate: the quality parameter ``t`` in [0, 1] maps to log lambda,
    and each conditioned layer gets ``x * exp(a(t)) + b(t)``. Initialised to the identity.
    """

    def __init__(self, channels: list[int], hidden: int = 64):
        super().__init__()
        self.channels = list(channels)
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 2 * sum(channels)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, t: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = self.net(t.view(-1, 1) * 2.0 - 1.0)
        gains, biases = out.split(sum(self.channels), dim=1)
        result = []
        for g, b in zip(gains.split(self.channels, 1), biases.split(self.channels, 1)):
            result.append((torch.exp(g)[:, :, None, None], b[:, :, None, None]))
        return result


LOG2 = math.log(2.0)
