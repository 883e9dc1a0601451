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
from .rec import range_coder as rc
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


_OCTAVE_STEPS = 4          # block counts are coded on a log scale: nb = round(2 ** (s / 4))
_NB_ALPHABET = 96          # up to 2**23.75 blocks per channel
DEFAULT_BLOCK_RATIO = 1.0  # blocks per channel = ratio * KL_c / kappa


def _position_order(positions: int, seed: int) -> np.ndarray:
    """A seeded permutation of the latent positions, shared by encoder and decoder (integer-only).

    Blocks are runs of this order, so each block gathers positions from all over the image and
    their KL sums concentrate near the per-channel average: uniform blocks then fit kappa well,
    and the plan costs a few bits per channel instead of several bits per block."""
    x = np.arange(positions, dtype=np.uint64) + np.uint64(seed & 0xFFFF_FFFF_FFFF_FFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return np.argsort(x, kind="stable")


def _blocks_per_channel(symbol: np.ndarray, positions: int) -> np.ndarray:
    nb = np.round(2.0 ** (symbol.astype(np.float64) / _OCTAVE_STEPS)).astype(np.int64)
    return np.clip(nb, 1, positions)


def _channel_plan(kl: np.ndarray, kappa: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the block-count symbol and the index bits per block, from the channel's KL."""
    kl_c = kl.sum(axis=1)
    target = ratio * kl_c / kappa
    symbols = np.clip(np.round(_OCTAVE_STEPS * np.log2(np.maximum(target, 1.0))), 0, _NB_ALPHABET - 1)
    symbols = symbols.astype(np.int32)
    # Channels too poor for one full block get one block with just enough candidates (0 bits:
    # the decoder takes a fixed prior sample).
    exps = np.where(target < 1.0, np.clip(np.ceil(kl_c + 0.5), 0, kappa), kappa).astype(np.int32)
    exps = np.where(kl_c < 0.5, 0, exps).astype(np.int32)
    return symbols, exps


def _block_plan(symbols: np.ndarray, exps: np.ndarray, positions: int, kappa: int) -> "rec.BlockPlan":
    lengths, exponents = [], []
    for nb, k in zip(_blocks_per_channel(symbols, positions), exps):
        base, extra = divmod(positions, int(nb))
        lengths.append(np.full(int(nb), base, np.int64) + (np.arange(int(nb)) < extra))
        exponents.append(np.full(int(nb), k, np.int64))
    return rec.BlockPlan(np.concatenate(lengths), np.concatenate(exponents), kappa)


def _encode_channel_plan(symbols: np.ndarray, exps: np.ndarray, kappa: int) -> bytes:
    return rc.encode_adaptive(np.concatenate([symbols, exps]), max(_NB_ALPHABET, kappa + 1))


def _decode_channel_plan(data: bytes, channels: int, kappa: int) -> tuple[np.ndarray, np.ndarray]:
    both = rc.decode_adaptive(data, 2 * channels, max(_NB_ALPHABET, kappa + 1))
    symbols, exps = both[:channels], both[channels:]
    if (symbols >= _NB_ALPHABET).any() or (exps > kappa).any():
        raise bbi.BbiError("corrupt file: block plan out of range")
    return symbols, exps


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
def _code_level(q, p, kappa: int, seed: int, temperature: float, ratio: float):
    """REC-code one latent level: (plan bytes, index bytes, decoded sample, kl bits, index bits, blocks)."""
    order = _position_order(q.mean.shape[2] * q.mean.shape[3], seed)
    mu_q, sd_q, mu_p, sd_p = (_ordered(a, order) for a in (q.mean, q.scale, p.mean, p.scale))
    kl = rec.kl_bits(mu_q, sd_q, mu_p, sd_p)
    channels, positions = q.mean.shape[1], order.size
    symbols, exps = _channel_plan(kl.reshape(channels, positions), kappa, ratio)
    plan = _block_plan(symbols, exps, positions, kappa)
    indices = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, seed, temperature=temperature)
    sample = rec.decode(mu_p, sd_p, plan, seed, indices)
    return (_encode_channel_plan(symbols, exps, kappa), rec.encode_indices(indices, plan),
            _unordered(sample, order, q.mean.shape), float(kl.sum()), plan.index_bits, plan.n_blocks)


@torch.no_grad()
def _analyse(prep: PreparedImage, model, t: float, seed: int, kappa: int, temperature: float, ratio: float,
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
    zp, zi, z_sample, kl_z, bits_z, blocks_z = _code_level(qz, pz, kappa, _seed(seed, _Z_SEED_SALT),
                                                           temperature, ratio)
    z_hat = z_sample.to(device)
    py = model.prior_y(z_hat, fhs)
    if progress:
        progress("coding y")
    yp, yi, _, kl_y, bits_y, blocks_y = _code_level(qy, py, kappa, _seed(seed, _Y_SEED_SALT), temperature, ratio)
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

    def build(t: float, q_int: int) -> tuple[bytes, EncodeStats]:
        sections, st = _analyse(prep, net, t, seed, kappa, temperature, block_ratio, dev, progress)
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
    shape = prior.mean.shape
    order = _position_order(shape[2] * shape[3], seed)
    mu_p, sd_p = _ordered(prior.mean, order), _ordered(prior.scale, order)
    try:
        symbols, exps = _decode_channel_plan(container.section(level + "PLN"), shape[1], header.kappa)
        plan = _block_plan(symbols, exps, order.size, header.kappa)
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
