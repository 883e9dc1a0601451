"""Per-image posterior refinement: spend encode time to lower the codec's rate-distortion objective.

The analysis transform infers the posteriors q(z), q(y) in one amortised pass, which leaves a gap
to the best posterior for *this* image (Yang, Bamler & Mandt 2020). For a Gaussian VAE sent by
relative entropy coding the objective needs no relaxation: the file pays about KL(q||p) bits per
level and shows a sample close to a posterior sample, so refinement moves the means and
log-scales of q(z) and q(y) (never the weights) to lower

    (KL(q(z) || p(z)) + KL(q(y) || p(y | z~))) / pixels + lambda(t) * MSE(synthesis(y~), image)

with reparameterised samples z~, y~: the training loss (``bbimg.training.trainer.rd_loss``)
for one image. Choices, each measured with ``bench/refine_probe.py`` on real files:

* distortion on the real pixels only, after clipping to [0, 1]: the padding (the last row and
  column replicated up to the model's stride) is cropped away by the decoder, which also clips.
  The rate is over the real pixels too (bits per pixel of the file).
* p(y | z) at the z *sample*, as in training and as in the file (which carries a REC sample of
  q(z)). At the z mean the ideal gain is about the same but the real files keep half of it.
* each step decodes an antithetic pair y~ = mean +- scale * noise (and z~ likewise): the noise's
  first-order part cancels, which gains more per decode than two independent steps.
* diagonal Newton steps with the posterior's own precision as the curvature (for a Gaussian VAE
  near its optimum 1/sigma_q^2 = 1/sigma_p^2 + the distortion's curvature): mean -= lr *
  sigma_q^2 * gradient, at most ``max_step`` sigma_q per step, and the log-scales towards the
  fixed point sigma^2 (1 + d objective / d log sigma) = sigma^2, damped. With lr = 0.5 it reaches
  in 5-10 steps what Adam reaches in 25 (Adam stays available as ``Settings.optimizer``).
* the learning rate decays (cosine) to a tenth over the run.

:func:`refine_y` re-fits q(y) against p(y | z_hat) once the file's z is fixed (measured: it does
not pay after the joint refinement; see the bench).

Deterministic for a seed on a given device and thread count: the noise comes from a
``torch.Generator`` seeded with ``seed``. Never worse than the start on :func:`objective` (the
same objective on one fixed antithetic draw for the seed): refinement returns the inputs when it
did not improve on them.

Numpy in and out, shapes as the codec holds them ((1, C, h, w) float32); torch is imported only
here, so only encoder efforts that refine need it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .models.vae import LOG_SIGMA_MAX, LOG_SIGMA_MIN, Gaussian, gaussian_kl_bits, quality_to_lambda

__all__ = ["refine_posteriors", "refine_y", "objective", "Objective", "Settings", "SETTINGS", "StepProgress"]

#: progress(steps_done, steps_total), called after every Adam step.
StepProgress = Callable[[int, int], None]

_EVAL_SALT = 0x0E7A1  # keys the noise: the first draw judges start against end


# -- the one place that knows how the model lays out its FiLM parameters -------------------------
def _films(net, t: float, device: torch.device):
    """(synthesis, y prior, z prior) FiLM parameters of quality ``t``: by name where the model
    names its groups (``net.films(t)``), else by position (``net._films(t)``: analysis, synthesis,
    hyper analysis, y prior, z prior)."""
    tt = torch.tensor([float(t)], device=device)
    f = net.films(tt) if hasattr(net, "films") else net._films(tt)
    if hasattr(f, "synthesis"):
        return f.synthesis, getattr(f, "hyper_synthesis", None) or f.y_prior, f.z_prior
    return f[1], f[3], f[4]


def _device(net) -> torch.device:
    return next(net.parameters()).device


def _padded_image(pixels: np.ndarray, stride: int, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') in [0, 1], padded to ``stride`` by replicating the last
    row and column (as the codec's analysis sees it)."""
    h, w = pixels.shape[:2]
    ri = np.minimum(np.arange(-(-h // stride) * stride), h - 1)
    ci = np.minimum(np.arange(-(-w // stride) * stride), w - 1)
    x = np.ascontiguousarray(pixels[ri[:, None], ci[None, :], :3].transpose(2, 0, 1)[None], dtype=np.float32)
    return torch.from_numpy(x / np.float32(255.0)).to(device)


@dataclass
class Objective:
    """One evaluation of the refinement objective (per real pixel)."""
    loss: float      # bpp + lambda * mse
    bits_y: float    # KL(q(y) || p(y | z~)) in bits
    bits_z: float    # KL(q(z) || p(z)) in bits (0 for refine_y)
    mse: float       # of the clipped decoded sample on the real pixels, 0-255 scale
    pixels: int

    @property
    def bpp(self) -> float:
        return (self.bits_y + self.bits_z) / self.pixels

    @property
    def psnr(self) -> float:
        return 10.0 * math.log10(255.0**2 / max(self.mse, 1e-12))


class _Problem:
    """The objective of one image at one quality, on the device of the model."""

    def __init__(self, net, pixels: np.ndarray, t: float, settings: "Settings | None" = None):
        self.cfg = SETTINGS if settings is None else settings
        self.net, self.device = net, _device(net)
        self.h, self.w = pixels.shape[:2]
        self.x = _padded_image(pixels, net.cfg.stride, self.device)
        self.f_syn, self.f_py, self.f_pz = _films(net, t, self.device)
        self.lam = float(quality_to_lambda(torch.tensor(float(t)), net.cfg))
        self.n = self.h * self.w
        wide = net.cfg.latent_channels >= 64
        self.channels_last = wide if self.cfg.channels_last is None else self.cfg.channels_last

    def prior_z(self, shape) -> Gaussian:
        return self.net.prior_z(self.f_pz, shape)

    def prior_y(self, z: torch.Tensor) -> Gaussian:
        return self.net.prior_y(z, self.f_py)

    def terms(self, qy: Gaussian, y: torch.Tensor, py: Gaussian, qz: Gaussian | None = None):
        """(loss, bits_y, bits_z, mse) as tensors for the decoded samples ``y`` (a batch: the
        mean over it; ``py`` may be a batch of the same size)."""
        kl_y = gaussian_kl_bits(qy, py)
        if self.cfg.skip_ratio:
            skip = _skipped(qy.scale, py.scale, self.cfg.skip_ratio)
            kl_y = kl_y.masked_fill(skip, 0.0)
            y = torch.where(skip, py.mean, y)
        bits_y = kl_y.sum() / y.shape[0]
        bits_z = gaussian_kl_bits(qz, self.prior_z(qz.mean.shape)).sum() if qz is not None else bits_y.new_zeros(())
        if self.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        x_hat = self.net.decode(y, self.f_syn)[:, :, :self.h, :self.w].clamp(0.0, 1.0)
        mse = ((x_hat - self.x[:, :, :self.h, :self.w]) * 255.0).pow(2).mean()
        rate = self.cfg.rate_weight_y * bits_y + self.cfg.rate_weight_z * bits_z
        return rate / self.n + self.lam * mse, bits_y, bits_z, mse


def _skipped(sd_q: torch.Tensor, sd_p: torch.Tensor, ratio: float) -> torch.Tensor:
    """The dims the codec's prior skip decodes as the prior mean (``bbimg.rec.prior_skip``'s
    rule: sigma_p below ``ratio`` x the channel's median sigma_q), as a constant mask."""
    with torch.no_grad():
        median = sd_q.flatten(2).median(dim=2).values[:, :, None, None]
        return sd_p < ratio * median


def _tensor(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)


def _log_scale(scale: np.ndarray, device) -> torch.Tensor:
    return _tensor(scale, device).clamp_min(1e-30).log().clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def _np(a: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(a.detach().to("cpu", torch.float32).numpy())


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)


def _noise(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)


def _cosine(lr: float, step: int, steps: int) -> float:
    """Cosine decay from ``lr`` to lr / 10 over the run: big early moves, a settled end."""
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1))))


@dataclass
class Settings:
    """How refinement optimises: the defaults are the measured choice; the alternatives stay so
    that ``bench/refine_probe.py --settings`` can compare them."""

    #: Adam: means move in units of their starting posterior scale, so a step is about ``lr``
    #: standard deviations of q for every latent, whatever its magnitude.
    precondition: bool = True
    #: Cosine decay of the learning rate to a tenth over the run.
    decay: bool = True
    #: p(y | z) at the z sample (training, and the file) or at the z mean.
    prior_at_z_sample: bool = True
    #: Each step decodes the antithetic pair mean +- scale * noise (twice the work per step): the
    #: noise's first-order part cancels in the gradients.
    antithetic: bool = True
    #: Step size of the log-scales relative to the means' (Adam: means want ~0.1-0.3 sigma per
    #: step, log-scales ~0.01; Newton: this times lr of the fixed-point step).
    scale_lr: float = 0.05
    #: "newton" (diagonal, the posterior precision as the curvature; lr = fraction of the full
    #: Newton step) or "adam" (lr = step in starting-scale units).
    optimizer: str = "newton"
    #: Newton: no mean moves by more than this many posterior standard deviations in one step.
    max_step: float = 0.5
    #: Weights of the y and z bits in the objective (the file pays about the block ratio times
    #: the KL: 1.1 for y and 1.3 for z at the codec's defaults).
    rate_weight_y: float = 1.0
    rate_weight_z: float = 1.0
    #: Model the codec's prior skip (``bbimg.rec.prior_skip``): dims whose sigma_p is below this
    #: multiple of the channel's median sigma_q are decoded as the prior mean and cost nothing.
    #: None: every dim is a sample.
    skip_ratio: float | None = None
    #: The synthesis runs in channels-last layout, oneDNN's fast path on the CPU for wide layers
    #: (~1.5x per step for the shipped model; ~10x slower for a test model of 8 channels).
    #: None: when the latent has at least 64 channels.
    channels_last: bool | None = None


#: The settings used where a call passes none.
SETTINGS = Settings()


class _Latents:
    """Free parameters of q(z) and/or q(y): the means' offsets from the start, in units of the
    starting scale (zero at the start, so the first step sees the inputs bit for bit), and the
    log-scales."""

    def __init__(self, arrays: list[tuple[np.ndarray, np.ndarray]], device, precondition: bool):
        self.params, self.units, self.starts = [], [], []
        for mean, scale in arrays:
            log_scale = _log_scale(scale, device)
            self.starts.append(_tensor(mean, device))
            self.units.append(log_scale.exp() if precondition else torch.ones_like(log_scale))
            self.params += [torch.zeros_like(log_scale, requires_grad=True), log_scale.requires_grad_(True)]

    def gaussians(self) -> list[Gaussian]:
        p = self.params
        return [Gaussian(m + p[2 * i] * u, p[2 * i + 1].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX))
                for i, (m, u) in enumerate(zip(self.starts, self.units))]

    def snapshot(self) -> list[Gaussian]:
        with torch.no_grad():
            return [Gaussian(g.mean.detach().clone(), g.log_scale.detach().clone()) for g in self.gaussians()]


def _run(latents: _Latents, terms, steps: int, lr: float, gen: torch.Generator,
         progress: StepProgress | None, problem: _Problem) -> float:
    """Refine in place; returns the objective of the first step (the inputs, on the first draw)."""
    cfg = problem.cfg
    if cfg.optimizer == "newton":
        return _run_newton(latents, terms, steps, lr, gen, progress, problem)
    if cfg.optimizer != "adam":
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    first = math.nan
    p = latents.params
    opt = torch.optim.Adam([dict(params=p[0::2], gain=1.0), dict(params=p[1::2], gain=cfg.scale_lr)], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = group["gain"] * (_cosine(lr, step, steps) if cfg.decay else lr)
        opt.zero_grad(set_to_none=True)
        loss = terms(latents.gaussians(), gen)[0]
        first = float(loss.detach()) if step == 0 else first
        loss.backward(inputs=latents.params)  # gradients of the latents only, never the weights
        opt.step()
        if progress is not None:
            progress(step + 1, steps)
    return first


def _run_newton(latents: _Latents, terms, steps: int, lr: float, gen: torch.Generator,
                progress: StepProgress | None, problem: _Problem) -> float:
    """Diagonal Newton steps with the posterior's own precision as the curvature: at the optimum
    1/sigma_q^2 = 1/sigma_p^2 + the distortion's curvature, so mean -= lr * sigma_q^2 * grad
    (grad of the objective in nats) and sigma^2 <- sigma^2 / (1 + d/dlog sigma) (its fixed point)."""
    p, cfg = latents.params, problem.cfg
    scale, first = problem.n * math.log(2.0), math.nan
    for step in range(steps):
        rate = _cosine(lr, step, steps) if cfg.decay else lr
        loss = terms(latents.gaussians(), gen)[0]
        first = float(loss.detach()) if step == 0 else first
        grads = torch.autograd.grad(loss, p)
        with torch.no_grad():
            for i, unit in enumerate(latents.units):
                offset, ls = p[2 * i], p[2 * i + 1]
                g_u, g_s = grads[2 * i] * scale, grads[2 * i + 1] * scale
                var = (2 * ls.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)).exp()
                step_mean = (rate * var * g_u / unit).clamp(-cfg.max_step * var.sqrt(), cfg.max_step * var.sqrt())
                offset -= step_mean / unit  # d mean = -rate var g_mean, g_mean = g_u / unit; <= max_step sigma
                ls -= cfg.scale_lr * rate * 0.5 * torch.log((1 + g_s).clamp_min(0.25))
        if progress is not None:
            progress(step + 1, steps)
    return first


def _check(steps: int, lr: float) -> None:
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")


def _run_generator(device: torch.device, seed: int) -> torch.Generator:
    """The steps' noise: its first draw is the yardstick's (:func:`objective`), so the first step
    also measures the start."""
    return _generator(device, seed ^ _EVAL_SALT)


@torch.no_grad()
def _evaluate(loss_terms, qs: list[Gaussian], seed: int, pixels: int) -> Objective:
    loss, by, bz, mse = loss_terms(qs, _run_generator(qs[0].mean.device, seed))
    return Objective(float(loss), float(by), float(bz), float(mse), pixels)


def _draw(q: Gaussian, gen: torch.Generator, antithetic: bool) -> torch.Tensor:
    """A reparameterised sample of q, or the antithetic pair (mean +- scale * noise) as a batch of 2."""
    eps = _noise(q.mean, gen)
    if antithetic:
        eps = torch.cat([eps, -eps])
    return q.mean + q.scale * eps


def _joint_terms(problem: _Problem, antithetic: bool = False):
    def terms(qs, gen):
        qz, qy = qs
        z = _draw(qz, gen, antithetic)
        y = _draw(qy, gen, antithetic)
        return problem.terms(qy, y, problem.prior_y(z if problem.cfg.prior_at_z_sample else qz.mean), qz)
    return terms


def _y_terms(problem: _Problem, py: Gaussian, antithetic: bool = False):
    def terms(qs, gen):
        (qy,) = qs
        return problem.terms(qy, _draw(qy, gen, antithetic), py)
    return terms


def objective(net, pixels: np.ndarray, t: float, y_mean: np.ndarray, y_scale: np.ndarray,
              z_mean: np.ndarray | None = None, z_scale: np.ndarray | None = None, *,
              py_mean: np.ndarray | None = None, py_scale: np.ndarray | None = None, seed: int = 0,
              settings: Settings | None = None) -> Objective:
    """The refinement objective of these posteriors on one fixed antithetic draw (deterministic
    for ``seed``): against p(y | z~) for a z sample when q(z) is given, else against the fixed
    prior ``py_mean``/``py_scale``. This is the yardstick by which refinement never ends worse
    (``settings``: as for the refinement; None: :data:`SETTINGS`)."""
    problem = _Problem(net, pixels, t, settings)
    dev = problem.device
    with torch.no_grad():
        qy = Gaussian(_tensor(y_mean, dev), _log_scale(y_scale, dev))
        if z_mean is not None:
            qz = Gaussian(_tensor(z_mean, dev), _log_scale(z_scale, dev))
            return _evaluate(_joint_terms(problem, True), [qz, qy], seed, problem.n)
        py = Gaussian(_tensor(py_mean, dev), _log_scale(py_scale, dev))
        return _evaluate(_y_terms(problem, py, True), [qy], seed, problem.n)


def _finish(latents: _Latents, inputs: list[np.ndarray], terms, seed: int, problem: _Problem,
            start: float) -> list[np.ndarray]:
    """The refined (mean, scale) arrays, or the inputs themselves where the refined ones are not
    better on the fixed draw: judged from numpy exactly as :func:`objective` sees them. ``start``:
    the inputs' objective when the first step already computed it on that draw (NaN: compute it)."""
    refined = [a for g in latents.snapshot() for a in (_np(g.mean), _np(g.log_scale.exp()))]

    def judge(arrays: list[np.ndarray]) -> float:
        dev = problem.device
        qs = [Gaussian(_tensor(arrays[i], dev), _log_scale(arrays[i + 1], dev)) for i in range(0, len(arrays), 2)]
        return _evaluate(terms, qs, seed, problem.n).loss

    before = start if problem.cfg.antithetic else judge(inputs)  # the first step ran on the yardstick's draw
    return refined if judge(refined) <= before else list(inputs)  # a NaN end keeps the inputs


def refine_posteriors(net, pixels: np.ndarray, t: float, y_mean: np.ndarray, y_scale: np.ndarray,
                      z_mean: np.ndarray, z_scale: np.ndarray, *, steps: int, lr: float, seed: int = 0,
                      progress: StepProgress | None = None, settings: Settings | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Refine q(y) and q(z) of one image (``pixels``: (H, W, 3) uint8; the posteriors (1, C, h, w)
    as the codec has them, scales not log-scales) for ``steps`` steps at ``lr`` (Newton: the
    fraction of the full step; 0.5 measured best). Returns (y_mean, y_scale, z_mean, z_scale) as
    float32 numpy arrays; ``steps=0`` returns the inputs. ``settings``: None for :data:`SETTINGS`."""
    _check(steps, lr)
    if steps == 0:
        return y_mean, y_scale, z_mean, z_scale
    problem = _Problem(net, pixels, t, settings)
    latents = _Latents([(z_mean, z_scale), (y_mean, y_scale)], problem.device, problem.cfg.precondition)
    with torch.enable_grad():
        start = _run(latents, _joint_terms(problem, problem.cfg.antithetic), steps, lr,
                     _run_generator(problem.device, seed), progress, problem)
    zm, zs, ym, ys = _finish(latents, [z_mean, z_scale, y_mean, y_scale], _joint_terms(problem, True), seed, problem,
                             start)
    return ym, ys, zm, zs


def refine_y(net, pixels: np.ndarray, t: float, y_mean: np.ndarray, y_scale: np.ndarray,
             py_mean: np.ndarray, py_scale: np.ndarray, *, steps: int, lr: float, seed: int = 0,
             progress: StepProgress | None = None, settings: Settings | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Re-fit q(y) against the fixed prior p(y | z_hat) of the z the file carries (same objective
    without the z term). Returns (y_mean, y_scale); ``steps=0`` returns the inputs."""
    _check(steps, lr)
    if steps == 0:
        return y_mean, y_scale
    problem = _Problem(net, pixels, t, settings)
    dev = problem.device
    py = Gaussian(_tensor(py_mean, dev), _log_scale(py_scale, dev))
    latents = _Latents([(y_mean, y_scale)], dev, problem.cfg.precondition)
    with torch.enable_grad():
        start = _run(latents, _y_terms(problem, py, problem.cfg.antithetic), steps, lr, _run_generator(dev, seed),
                     progress, problem)
    return tuple(_finish(latents, [y_mean, y_scale], _y_terms(problem, py, True), seed, problem, start))
