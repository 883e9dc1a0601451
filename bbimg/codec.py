"""The codec pipeline: image -> posteriors -> REC-coded z, then y against p(y | decoded z) -> .bbi.

Glue only: the model (torch) gives Gaussians, ``bbimg.rec`` (numpy) turns them into indices and
back, ``bbimg.format`` (bytes) stores them. Decoding needs nothing but the file and the model it
names: the block plans travel in the file as integers, and no entropy-coding table is computed from
floating-point network outputs, so tiny numerical differences between machines (CPU vs CUDA,
thread counts, BLAS) only move decoded pixels by tiny amounts; they can never desynchronise the
bit stream (the failure CompressAI users report when encoder and decoder CDFs differ).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import format as bbi
from . import rec
from .image import COLOUR_GREY, PreparedImage, prepare, restore
from .models import DEFAULT_MODEL, load_model, pad_to_multiple

__all__ = ["encode", "decode", "info", "quality_to_t", "EncodeStats", "DEFAULT_QUALITY", "DEFAULT_KAPPA",
           "DEFAULT_TEMPERATURE", "MAX_PIXELS"]

DEFAULT_QUALITY = 75
DEFAULT_KAPPA = 16
DEFAULT_TEMPERATURE = 0.0
MAX_PIXELS = bbi.MAX_PIXELS
_Z_SEED_SALT, _Y_SEED_SALT = 0x5A5A_0001, 0x5959_0002

Progress = Callable[[str], None]


def quality_to_t(quality: float) -> float:
    """User quality 1..100 (higher = more bits) -> the model's trade-off parameter t in [0, 1]."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return (float(quality) - 1.0) / 99.0


def _seed(seed: int, salt: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + salt) & 0xFFFF_FFFF_FFFF_FFFF


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy().reshape(-1)


@dataclass
class EncodeStats:
    kl_bits: float          # KL(q||p) of both levels: the ideal rate
    index_bits: int         # bits spent on candidate indices
    side_bits: int          # bits of the block plans
    file_bytes: int
    blocks: int


@dataclass
class _Analysis:
    header_fields: dict
    sections: list
    stats: EncodeStats


def _to_tensor(pixels: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(pixels).to(device).permute(2, 0, 1)[None].float().div_(255.0)


@torch.no_grad()
def _code_level(q, p, kappa: int, seed: int, temperature: float):
    """REC-code one latent level; returns (plan bytes, index bytes, decoded sample, kl, index bits, blocks)."""
    mu_q, sd_q, mu_p, sd_p = _flat(q.mean), _flat(q.scale), _flat(p.mean), _flat(p.scale)
    kl = rec.kl_bits(mu_q, sd_q, mu_p, sd_p)
    plan = rec.plan_blocks(kl, kappa)
    indices = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, seed, temperature=temperature)
    sample = rec.decode(mu_p, sd_p, plan, seed, indices)
    return (rec.encode_plan(plan), rec.encode_indices(indices, plan), sample, float(kl.sum()),
            int(np.asarray(plan.exponents, dtype=np.int64).sum()), len(plan.lengths))


@torch.no_grad()
def _analyse(prep: PreparedImage, model, t: float, seed: int, kappa: int, temperature: float,
             device, progress: Progress | None) -> tuple[list, EncodeStats]:
    x = pad_to_multiple(_to_tensor(prep.pixels, device), model.cfg.stride)
    fa, fs, fha, fhs, fz = model._films(torch.tensor([t], device=device))
    if progress:
        progress("analysis")
    qy = model.encode_y(x, fa)
    qz = model.encode_z(qy.mean, fha)
    pz = model.prior_z(fz, qz.mean.shape)
    if progress:
        progress("coding z")
    zp, zi, z_sample, kl_z, bits_z, blocks_z = _code_level(qz, pz, kappa, _seed(seed, _Z_SEED_SALT), temperature)
    z_hat = torch.from_numpy(z_sample).to(device).view_as(qz.mean)
    py = model.prior_y(z_hat, fhs)
    if progress:
        progress("coding y")
    yp, yi, _, kl_y, bits_y, blocks_y = _code_level(qy, py, kappa, _seed(seed, _Y_SEED_SALT), temperature)
    sections = [bbi.Section("ZPLN", zp), bbi.Section("ZIDX", zi), bbi.Section("YPLN", yp), bbi.Section("YIDX", yi)]
    stats = EncodeStats(kl_z + kl_y, bits_z + bits_y, 8 * (len(zp) + len(yp)), 0, blocks_z + blocks_y)
    return sections, stats


def _colour_mode(prep: PreparedImage) -> "bbi.ColourMode":
    if prep.colour == COLOUR_GREY:
        return bbi.ColourMode.LA if prep.had_alpha else bbi.ColourMode.L
    return bbi.ColourMode.RGBA if prep.had_alpha else bbi.ColourMode.RGB


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image)))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError("arrays must be uint8 with shape (H, W), (H, W, 3) or (H, W, 4)")
        return Image.fromarray(image)
    raise TypeError(f"expected a PIL image, a uint8 array or encoded image bytes, got {type(image).__name__}")


def encode(image, quality: float = DEFAULT_QUALITY, *, bpp: float | None = None, model: str = DEFAULT_MODEL,
           device: str = "cpu", seed: int = 0, kappa: int = DEFAULT_KAPPA,
           temperature: float = DEFAULT_TEMPERATURE, progress: Progress | None = None,
           stats: list | None = None) -> bytes:
    """Compress an image to .bbi bytes.

    ``quality`` 1..100 (higher = more bits) or ``bpp``: a target file size in bits per pixel, met
    by searching the model's continuous quality (the size is known before any candidate search).
    """
    pil = _as_pil(image)
    prep = prepare(pil)
    h, w = prep.pixels.shape[:2]
    if h * w > MAX_PIXELS or max(h, w) > 65535:
        raise ValueError(f"image of {w}x{h} is larger than the format allows")
    if not 0 <= seed < 2**64:
        raise ValueError("seed must be in [0, 2**64)")
    if bpp is not None and not (bpp > 0 and math.isfinite(bpp)):
        raise ValueError(f"target bpp must be a positive number, got {bpp}")
    info_, net = load_model(model, device)
    dev = torch.device(device)

    def build(t: float, q_int: int) -> tuple[bytes, EncodeStats]:
        sections, st = _analyse(prep, net, t, seed, kappa, temperature, dev, progress)
        if prep.icc_profile:
            sections.append(bbi.Section("ICCP", prep.icc_profile, required=False))
        header = bbi.Header(width=w, height=h, model_name=info_.name, weights_hash=info_.sha256,
                            quality_t=t, quality_q=q_int, seed=seed, kappa=kappa, temperature=temperature,
                            colour_mode=_colour_mode(prep), bit_depth=min(prep.bit_depth, 16))
        data = bbi.write(bbi.Container(header=header, sections=tuple(sections)))
        st.file_bytes = len(data)
        return data, st

    if bpp is None:
        data, st = build(quality_to_t(quality), int(round(quality)))
    else:
        data, st = _search_bpp(build, bpp, h * w)
    if stats is not None:
        stats.append(st)
    return data


def _search_bpp(build, target: float, pixels: int):
    """Bisection on t: file size grows monotonically with t (up to candidate noise)."""
    lo, hi = 0.0, 1.0
    best = None
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        data, st = build(mid, max(1, min(100, int(round(1 + 99 * mid)))))
        got = len(data) * 8 / pixels
        if best is None or abs(got - target) < abs(len(best[0]) * 8 / pixels - target):
            best = (data, st)
        if abs(got - target) <= 0.005 * target:
            break
        lo, hi = (mid, hi) if got < target else (lo, mid)
    return best


def _read(data: bytes) -> bbi.Container:
    return bbi.read(bytes(data))


@torch.no_grad()
def decode(data: bytes, *, device: str = "cpu") -> Image.Image:
    """Decompress .bbi bytes to a PIL image (mode RGB or L, ICC profile attached)."""
    container = _read(data)
    h = container.header
    for tag in ("ZPLN", "ZIDX", "YPLN", "YIDX"):
        if container.section(tag) is None:
            raise bbi.BbiError(f"corrupt file: missing required section {tag}")
    try:
        info_, net = load_model(h.model_name, device)
    except ValueError as exc:
        raise bbi.BbiError(f"file needs model {h.model_name!r}, which is not installed") from exc
    if not h.matches_weights(info_.sha256):
        raise bbi.BbiError(f"file was coded with other weights of model {h.model_name!r} than the installed ones")
    dev = torch.device(device)
    stride = net.cfg.stride
    ph, pw = -(-h.height // stride) * stride, -(-h.width // stride) * stride
    fa, fs, fha, fhs, fz = net._films(torch.tensor([h.quality_t], device=dev))
    z_shape = (1, net.cfg.hyper_channels, ph // 64, pw // 64)
    pz = net.prior_z(fz, z_shape)
    z_hat = _decode_level(container, "Z", pz, h, _seed(h.seed, _Z_SEED_SALT)).to(dev).view(z_shape)
    py = net.prior_y(z_hat, fhs)
    y_hat = _decode_level(container, "Y", py, h, _seed(h.seed, _Y_SEED_SALT)).to(dev).view_as(py.mean)
    x_hat = net.decode(y_hat, fs)[0, :, :h.height, :h.width]
    pixels = x_hat.clamp_(0, 1).mul_(255).round_().to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    colour = "L" if h.colour_mode in (bbi.ColourMode.L, bbi.ColourMode.LA) else "RGB"
    return restore(np.ascontiguousarray(pixels), colour, container.section("ICCP"))


def _decode_level(container, level: str, prior, header, seed: int) -> torch.Tensor:
    mu_p, sd_p = _flat(prior.mean), _flat(prior.scale)
    try:
        plan = rec.decode_plan(container.section(level + "PLN"), mu_p.size, header.kappa)
        indices = rec.decode_indices(container.section(level + "IDX"), plan)
        sample = rec.decode(mu_p, sd_p, plan, seed, indices)
    except ValueError as exc:
        raise bbi.BbiError(f"corrupt file: {exc}") from exc
    return torch.from_numpy(sample)


def info(data: bytes) -> dict:
    """Header facts without decoding pixels."""
    meta = bbi.read_info(bytes(data))
    h = meta.header
    sections = {s.tag: s.length for s in meta.sections}
    return dict(width=h.width, height=h.height, bytes=meta.total_size, bpp=meta.bpp, model=h.model_name,
                weights_sha256=h.weights_hash.hex(), quality=h.quality_q, quality_t=h.quality_t, seed=h.seed,
                kappa=h.kappa, temperature=h.temperature, colour=h.colour_mode.name, bit_depth=h.bit_depth,
                version="%d.%d" % meta.version,
                sections=[dict(tag=s.tag, bytes=s.length, required=s.required) for s in meta.sections],
                section_bytes=sections)
