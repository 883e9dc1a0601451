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
from . import tiling  # tiling hook: large images (bbimg/tiling.py)
from .rec.channel_plan import (DEFAULT_BLOCK_RATIO, channel_plan, decode_channel_plan, encode_channel_plan,
                                plan_from_channels, position_order)
from .image import COLOUR_GREY, PreparedImage, prepare, restore
from .models import DEFAULT_MODEL, load_model, pad_to_multiple

__all__ = ["encode", "decode", "info", "quality_to_t", "EncodeStats", "DEFAULT_QUALITY", "DEFAULT_KAPPA",
           "DEFAULT_TEMPERATURE", "MAX_PIXELS"]

DEFAULT_QUALITY = 75
DEFAULT_KAPPA = 16
DEFAULT_TEMPERATURE = 1.0
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
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def _ordered(t: torch.Tensor, order: np.ndarray) -> np.ndarray:
    """(1, C, H, W) tensor -> float32 (C * H * W,) in channel-major, permuted-position order."""
    arr = t.detach().to("cpu", torch.float32).numpy().reshape(t.shape[1], -1)
    return np.ascontiguousarray(arr[:, order]).reshape(-1)


def _unordered(flat: np.ndarray, order: np.ndarray, shape) -> torch.Tensor:
    channels = shape[1]
    out = np.empty((channels, order.size), np.float32)
    out[:, order] = flat.reshape(channels, -1)
    return torch.from_numpy(out).view(shape)


@torch.no_grad()
def _code_level(q, p, kappa: int, seed: int, temperature: float, ratio: float, size_only: bool = False):
    """REC-code one latent level: (plan bytes, index bytes, decoded sample, kl bits, index bits, blocks).

    ``q`` and ``p`` may be one-element lists holding the posterior and prior: they are emptied once
    their values are reordered for the engine, so that a caller holding nothing else lets the
    tensors go (a y latent of an 8192 x 8192 image is ~170 MB per tensor).

    ``size_only`` skips the candidate search: the index stream's length is known from the plan
    alone (zero bytes of the right length stand in, and no sample is returned)."""
    q = q.pop() if isinstance(q, list) else q
    p = p.pop() if isinstance(p, list) else p
    shape = tuple(q.mean.shape)
    order = position_order(shape[2] * shape[3], seed)
    mu_q, sd_q, mu_p, sd_p = (_ordered(a, order) for a in (q.mean, q.scale, p.mean, p.scale))
    del q, p
    channels, positions = shape[1], order.size
    kl = tiling.kl_bits(mu_q, sd_q, mu_p, sd_p)  # tiling hook: rec.kl_bits in bounded-memory chunks
    kl_total, kl_channels = float(kl.sum()), kl.reshape(channels, positions).sum(axis=1, keepdims=True)
    del kl  # the plan needs only the per-channel sums
    symbols, exps = channel_plan(kl_channels, kappa, ratio)
    plan = plan_from_channels(symbols, exps, positions, kappa)
    if size_only:
        return (encode_channel_plan(symbols, exps, kappa), bytes((plan.index_bits + 7) // 8), None,
                kl_total, plan.index_bits, plan.n_blocks)
    indices = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, seed, temperature=temperature)
    del mu_q, sd_q
    sample = rec.decode(mu_p, sd_p, plan, seed, indices)
    return (encode_channel_plan(symbols, exps, kappa), rec.encode_indices(indices, plan),
            _unordered(sample, order, shape), kl_total, plan.index_bits, plan.n_blocks)


@torch.no_grad()
def _analyse(prep: PreparedImage, model, t: float, seed: int, kappa: int, temperature: float, ratio: float,
             device, progress: Progress | None, size_only: bool = False) -> tuple[list, EncodeStats]:
    # --- tiling hook (bbimg/tiling.py): above a size threshold g_a runs on overlapping tiles ---
    tiled = tiling.should_tile(*prep.pixels.shape[:2], model.cfg.stride)
    x = None if tiled else pad_to_multiple(_to_tensor(prep.pixels, device), model.cfg.stride)
    # --- end tiling hook ---
    fa, fs, fha, fhs, fz = model._films(torch.tensor([t], device=device))
    if progress:
        progress("analysis")
    qy = tiling.encode_y(model, prep.pixels, fa, device) if tiled else model.encode_y(x, fa)  # tiling hook
    qz = model.encode_z(qy.mean, fha)
    pz = model.prior_z(fz, qz.mean.shape)
    if progress:
        progress("coding z")
    zp, zi, z_sample, kl_z, bits_z, blocks_z = _code_level(qz, pz, kappa, _seed(seed, _Z_SEED_SALT),
                                                           temperature, ratio)
    z_hat = z_sample.to(device)
    py = model.prior_y(z_hat, fhs)
    if progress:
        progress("coding y")
    held_q, held_p = [qy], [py]  # handed over, so the y tensors are freed while the engine runs
    del qy, py
    yp, yi, _, kl_y, bits_y, blocks_y = _code_level(held_q, held_p, kappa, _seed(seed, _Y_SEED_SALT), temperature,
                                                    ratio, size_only)
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
           temperature: float = DEFAULT_TEMPERATURE, block_ratio: float = DEFAULT_BLOCK_RATIO,
           progress: Progress | None = None, stats: list | None = None) -> bytes:
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
    if not (0.1 <= block_ratio <= 10):
        raise ValueError(f"block_ratio must be in [0.1, 10], got {block_ratio}")
    if bpp is not None and not (bpp > 0 and math.isfinite(bpp)):
        raise ValueError(f"target bpp must be a positive number, got {bpp}")
    info_, net = load_model(model, device)
    dev = torch.device(device)

    def build(t: float, ratio: float, size_only: bool = False) -> tuple[bytes, EncodeStats]:
        q_int = int(round(quality)) if bpp is None else max(1, min(100, int(round(1 + 99 * t))))
        sections, st = _analyse(prep, net, t, seed, kappa, temperature, ratio, dev,
                                None if size_only else progress, size_only)
        if prep.icc_profile:
            sections.append(bbi.Section("ICCP", prep.icc_profile, required=False))
        header = bbi.Header(width=w, height=h, model_name=info_.name, weights_hash=info_.sha256,
                            quality_t=t, quality_q=q_int, seed=seed, kappa=kappa, temperature=temperature,
                            colour_mode=_colour_mode(prep), bit_depth=min(prep.bit_depth, 16))
        data = bbi.write(bbi.Container(header=header, sections=tuple(sections)))
        st.file_bytes = len(data)
        return data, st

    if bpp is None:
        data, st = build(quality_to_t(quality), block_ratio)
    else:
        t, ratio = _search_bpp(lambda t, r: len(build(t, r, size_only=True)[0]) * 8 / (h * w), bpp, block_ratio)
        data, st = build(t, ratio)
    if stats is not None:
        stats.append(st)
    return data


def _bisect(size_of, lo: float, hi: float, target: float, steps: int = 16, tol: float = 0.01):
    """x in [lo, hi] with size_of(x) within ``tol`` of ``target`` (size grows with x): regula falsi
    (Illinois variant) on log size, a few analysis passes instead of a bisection's dozen."""
    f_lo, f_hi = math.log(size_of(lo) / target), math.log(size_of(hi) / target)
    best = (lo, f_lo) if abs(f_lo) < abs(f_hi) else (hi, f_hi)
    side = 0
    for _ in range(steps):
        if abs(best[1]) <= tol or f_hi == f_lo:
            break
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        x = min(max(x, lo + 1e-6 * (hi - lo)), hi - 1e-6 * (hi - lo))
        fx = math.log(size_of(x) / target)
        if abs(fx) < abs(best[1]):
            best = (x, fx)
        if fx > 0:
            hi, f_hi = x, fx
            if side == -1:
                f_lo /= 2
            side = -1
        else:
            lo, f_lo = x, fx
            if side == 1:
                f_hi /= 2
            side = 1
    return best


def _search_bpp(bpp_of, target: float, ratio: float) -> tuple[float, float]:
    """(t, block ratio) giving the largest file not above ``target`` bpp.

    The size of a file is known exactly before the candidate search (index bits are fixed by the
    plan), so each probe costs one analysis pass. Quality t is searched first; targets below the
    model's lowest rate lower the block ratio at t = 0 (fewer, coarser blocks), targets above its
    highest raise it at t = 1."""
    if bpp_of(0.0, ratio) > target:
        lo, hi = math.log(0.1), math.log(ratio)
        x, _ = _bisect(lambda x: bpp_of(0.0, math.exp(x)), lo, hi, target)
        return 0.0, math.exp(x)
    if bpp_of(1.0, ratio) <= target:
        x, _ = _bisect(lambda x: bpp_of(1.0, math.exp(x)), math.log(ratio), math.log(10.0), target)
        return 1.0, math.exp(x)
    t, _ = _bisect(lambda t: bpp_of(t, ratio), 0.0, 1.0, target)
    return t, ratio


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
    # --- tiling hook (bbimg/tiling.py): above a size threshold g_s runs on overlapping tiles ---
    if tiling.should_tile(h.height, h.width, stride):
        pixels = tiling.decode_pixels(net, y_hat, fs, h.height, h.width)
    else:
        x_hat = net.decode(y_hat, fs)[0, :, :h.height, :h.width]
        pixels = x_hat.clamp_(0, 1).mul_(255).round_().to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    # --- end tiling hook ---
    colour = "L" if h.colour_mode in (bbi.ColourMode.L, bbi.ColourMode.LA) else "RGB"
    return restore(np.ascontiguousarray(pixels), colour, container.section("ICCP"))


def _decode_level(container, level: str, prior, header, seed: int) -> torch.Tensor:
    shape = prior.mean.shape
    order = position_order(shape[2] * shape[3], seed)
    mu_p, sd_p = _ordered(prior.mean, order), _ordered(prior.scale, order)
    try:
        symbols, exps = decode_channel_plan(container.section(level + "PLN"), shape[1], header.kappa)
        plan = plan_from_channels(symbols, exps, order.size, header.kappa)
        indices = rec.decode_indices(container.section(level + "IDX"), plan)
        sample = rec.decode(mu_p, sd_p, plan, seed, indices)
    except ValueError as exc:
        raise bbi.BbiError(f"corrupt file: {exc}") from exc
    return _unordered(sample, order, shape)


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
