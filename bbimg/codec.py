"""The codec pipeline: image -> posteriors -> REC-coded z, then y against p(y | decoded z) -> .bbi.

Glue only: the model gives Gaussians as numpy arrays (through ONNX Runtime where its export is
installed and the job runs on the CPU at an untiled size, so a command-line run never imports
torch; otherwise through torch), ``bbimg.rec`` (numpy) turns them into indices and back,
``bbimg.format`` (bytes) stores them. Decoding needs nothing but the file and the model it
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
from PIL import Image

from . import format as bbi
from . import rec
from . import runtime
from .transforms import load_transforms as _transforms
from . import tiling  # tiling hook: large images (bbimg/tiling.py)
from .rec import prior_skip
from .rec.channel_plan import (DEFAULT_BLOCK_RATIO, channel_plan, decode_channel_plan, encode_channel_plan,
                                plan_from_channels, position_order)
from .image import COLOUR_GREY, PreparedImage, prepare, restore
from .model_files import DEFAULT_MODEL

__all__ = ["encode", "decode", "info", "quality_to_t", "EncodeStats", "DEFAULT_QUALITY", "DEFAULT_KAPPA",
           "DEFAULT_TEMPERATURE", "MAX_PIXELS"]

DEFAULT_QUALITY = 75
DEFAULT_KAPPA = 16
#: None: the "nearest" selection rule (rec.encode); a number tau: importance sampling of
#: q^(1/tau)/p (tau = 1 is the exact REC sample). docs/rec.md section 5 has the comparison.
DEFAULT_TEMPERATURE: float | None = None
MAX_PIXELS = bbi.MAX_PIXELS
_Z_SEED_SALT, _Y_SEED_SALT = 0x5A5A_0001, 0x5959_0002
#: The hyper-latent z gets this many times the block ratio of y: a closer z gives a sharper prior
#: p(y | z), which saves more y bits than the extra z bits cost (8 Kodak images: -1.3% BD-rate
#: at 1.3 / 1.1 against 1; docs/rec.md section 1c).
Z_BLOCK_RATIO_GAIN = 1.3 / 1.1

Progress = Callable[[str], None]


def quality_to_t(quality: float) -> float:
    """User quality 1..100 (higher = more bits) -> the model's trade-off parameter t in [0, 1]."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return (float(quality) - 1.0) / 99.0


def _seed(seed: int, salt: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + salt) & 0xFFFF_FFFF_FFFF_FFFF


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


@dataclass
class _Gaussian:
    mean: np.ndarray   # (1, C, H, W) float32
    scale: np.ndarray


def _ordered(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(1, C, H, W) array -> float32 (C * H * W,) in channel-major, permuted-position order."""
    arr = np.asarray(a, dtype=np.float32)
    arr = arr.reshape(arr.shape[1], -1)
    return np.ascontiguousarray(arr[:, order]).reshape(-1)


def _unordered(flat: np.ndarray, order: np.ndarray, shape) -> np.ndarray:
    channels = shape[1]
    out = np.empty((channels, order.size), np.float32)
    out[:, order] = flat.reshape(channels, -1)
    return out.reshape(shape)


@dataclass
class _CodedLevel:
    plan: bytes              # the level's block plan (section xPLN)
    indices: bytes           # candidate indices (section xIDX)
    skip: bytes | None       # skip symbols (section YSKP), None when the level skips nothing
    sample: np.ndarray | None  # the latent exactly as the decoder will rebuild it
    kl_bits: float
    index_bits: int
    blocks: int


def _code_level(q: list, p: list, kappa: int, seed: int, temperature: float | None, ratio: float,
                size_only: bool = False, skip_ratio: float | None = None) -> _CodedLevel:
    """REC-code one latent level.

    ``q`` and ``p`` are one-element lists holding the posterior and prior: they are emptied once
    their values are reordered for the engine, so that a caller holding nothing else lets the
    arrays go (a y latent of an 8192 x 8192 image is ~170 MB per array).

    ``size_only`` skips the candidate search: the index stream's length is known from the plan
    alone (zero bytes of the right length stand in, and no sample is returned).

    ``skip_ratio``: dims the prior already explains are decoded as the prior mean and cost
    nothing (``bbimg.rec.prior_skip``); None skips nothing and writes no skip symbols."""
    q, p = q.pop(), p.pop()
    shape = tuple(q.mean.shape)
    order = position_order(shape[2] * shape[3], seed)
    mu_q, sd_q, mu_p, sd_p = (_ordered(a, order) for a in (q.mean, q.scale, p.mean, p.scale))
    del q, p
    channels, positions = shape[1], order.size
    skip_bytes = mask = None
    if skip_ratio is not None:
        symbols = prior_skip.skip_symbols(sd_q.reshape(channels, positions), sd_p.reshape(channels, positions),
                                          skip_ratio)
        mask = prior_skip.skip_mask(sd_p.reshape(channels, positions), symbols).reshape(-1)
        skip_bytes = prior_skip.encode_skip(symbols)
        np.copyto(mu_q, mu_p, where=mask)  # zero KL and no say in the candidate choice
        np.copyto(sd_q, sd_p, where=mask)
    kl = tiling.kl_bits(mu_q, sd_q, mu_p, sd_p)  # tiling hook: rec.kl_bits in bounded-memory chunks
    kl_total, kl_channels = float(kl.sum()), kl.reshape(channels, positions).sum(axis=1, keepdims=True)
    del kl  # the plan needs only the per-channel sums
    symbols, exps = channel_plan(kl_channels, kappa, ratio)
    plan = plan_from_channels(symbols, exps, positions, kappa)
    plan_bytes = encode_channel_plan(symbols, exps, kappa)
    if size_only:
        return _CodedLevel(plan_bytes, bytes((plan.index_bits + 7) // 8), skip_bytes, None, kl_total,
                           plan.index_bits, plan.n_blocks)
    indices = rec.encode(mu_q, sd_q, mu_p, sd_p, plan, seed, temperature=temperature)
    del mu_q, sd_q
    sample = rec.decode(mu_p, sd_p, plan, seed, indices)
    if mask is not None:
        np.copyto(sample, mu_p, where=mask)
    return _CodedLevel(plan_bytes, rec.encode_indices(indices, plan), skip_bytes, _unordered(sample, order, shape),
                       kl_total, plan.index_bits, plan.n_blocks)


def _analyse(prep: PreparedImage, tr, t: float, seed: int, kappa: int, temperature: float | None, ratio: float,
             progress: Progress | None, size_only: bool, skip_ratio: float) -> tuple[list, EncodeStats]:
    if progress:
        progress("analysis")
    y_mean, y_scale = tr.analysis_pixels(prep.pixels, t)
    z_mean, z_scale = tr.hyper(y_mean, t)
    pz = _Gaussian(*tr.z_prior(t, z_mean.shape[2], z_mean.shape[3]))
    if progress:
        progress("coding z")
    z = _code_level([_Gaussian(z_mean, z_scale)], [pz], kappa, _seed(seed, _Z_SEED_SALT), temperature,
                    ratio * Z_BLOCK_RATIO_GAIN)
    py = _Gaussian(*tr.y_prior(z.sample, t))
    if progress:
        progress("coding y")
    held_q, held_p = [_Gaussian(y_mean, y_scale)], [py]  # handed over: the y arrays are freed while the engine runs
    del y_mean, y_scale, py
    y = _code_level(held_q, held_p, kappa, _seed(seed, _Y_SEED_SALT), temperature, ratio, size_only, skip_ratio)
    sections = [bbi.Section("ZPLN", z.plan), bbi.Section("ZIDX", z.indices), bbi.Section("YPLN", y.plan),
                bbi.Section("YIDX", y.indices), bbi.Section("YSKP", y.skip)]
    stats = EncodeStats(z.kl_bits + y.kl_bits, z.index_bits + y.index_bits,
                        8 * (len(z.plan) + len(y.plan) + len(y.skip)), 0, z.blocks + y.blocks)
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
           temperature: float | None = DEFAULT_TEMPERATURE, block_ratio: float = DEFAULT_BLOCK_RATIO,
           skip_ratio: float = prior_skip.DEFAULT_SKIP_RATIO, progress: Progress | None = None, stats: list | None = None) -> bytes:
    """Compress an image to .bbi bytes.

    ``quality`` 1..100 (higher = more bits) or ``bpp``: a target file size in bits per pixel, met
    by searching the model's continuous quality (the size is known before any candidate search).
    ``temperature`` None (default) picks each block's candidate by the "nearest" rule; a number
    tau >= 0 samples it in proportion to q^(1/tau)/p instead (the file size does not change).
    """
    pil = _as_pil(image)
    prep = prepare(pil)
    h, w = prep.pixels.shape[:2]
    if h * w > MAX_PIXELS or max(h, w) > 65535:
        raise ValueError(f"image of {w}x{h} is larger than the format allows")
    if not 0 <= seed < 2**64:
        raise ValueError("seed must be in [0, 2**64)")
    if temperature is not None and not (0 <= temperature and math.isfinite(temperature)):
        raise ValueError(f"temperature must be None or a finite number >= 0, got {temperature}")
    if not (0.1 <= block_ratio <= 10):
        raise ValueError(f"block_ratio must be in [0.1, 10], got {block_ratio}")
    if not (0 <= skip_ratio <= 10):
        raise ValueError(f"skip_ratio must be in [0, 10], got {skip_ratio}")
    if bpp is not None and not (bpp > 0 and math.isfinite(bpp)):
        raise ValueError(f"target bpp must be a positive number, got {bpp}")
    tr = _transforms(model, device, h, w)

    def build(t: float, ratio: float, size_only: bool = False) -> tuple[bytes, EncodeStats]:
        q_int = int(round(quality)) if bpp is None else max(1, min(100, int(round(1 + 99 * t))))
        sections, st = _analyse(prep, tr, t, seed, kappa, temperature, ratio,
                                None if size_only else progress, size_only, skip_ratio)
        if prep.icc_profile:
            sections.append(bbi.Section("ICCP", prep.icc_profile, required=False))
        header = bbi.Header(width=w, height=h, model_name=tr.name, weights_hash=tr.sha256[:16],
                            quality_t=t, quality_q=q_int, seed=seed, kappa=kappa,
                            temperature=0.0 if temperature is None else temperature,
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


def decode(data: bytes, *, device: str = "cpu") -> Image.Image:
    """Decompress .bbi bytes to a PIL image (mode RGB or L, ICC profile attached)."""
    container = _read(data)
    h = container.header
    for tag in ("ZPLN", "ZIDX", "YPLN", "YIDX"):
        if container.section(tag) is None:
            raise bbi.BbiError(f"corrupt file: missing required section {tag}")
    try:
        tr = _transforms(h.model_name, device, h.height, h.width)
    except ValueError as exc:
        raise bbi.BbiError(f"file needs model {h.model_name!r}, which is not installed") from exc
    if not h.matches_weights(tr.sha256):
        raise bbi.BbiError(f"file was coded with other weights of model {h.model_name!r} than the installed ones")
    ph, pw = _padded(h, tr.stride)
    t = h.quality_t
    pz = _Gaussian(*tr.z_prior(t, ph // 64, pw // 64))
    z_hat = _decode_level(container, "Z", pz, h, _seed(h.seed, _Z_SEED_SALT))
    py = _Gaussian(*tr.y_prior(z_hat, t))
    y_hat = _decode_level(container, "Y", py, h, _seed(h.seed, _Y_SEED_SALT), skip=container.section("YSKP"))
    del py
    pixels = tr.synthesis_pixels(y_hat, t, h.height, h.width)  # tiles above a size threshold
    colour = "L" if h.colour_mode in (bbi.ColourMode.L, bbi.ColourMode.LA) else "RGB"
    return restore(np.ascontiguousarray(pixels), colour, container.section("ICCP"))


def _padded(header, stride: int) -> tuple[int, int]:
    """The image size the transforms ran on: height and width rounded up to the model's stride."""
    return -(-header.height // stride) * stride, -(-header.width // stride) * stride


def _read_plan(plan_bytes: bytes, channels: int, positions: int, kappa: int) -> rec.BlockPlan:
    symbols, exps = decode_channel_plan(plan_bytes, channels, kappa)
    return plan_from_channels(symbols, exps, positions, kappa)


def _decode_level(container, level: str, prior: _Gaussian, header, seed: int, skip: bytes | None = None) -> np.ndarray:
    """``skip``: the level's skip symbols (format 1.1 files; absent in 1.0 files, which skip nothing)."""
    shape = prior.mean.shape
    order = position_order(shape[2] * shape[3], seed)
    mu_p, sd_p = _ordered(prior.mean, order), _ordered(prior.scale, order)
    try:
        plan = _read_plan(container.section(level + "PLN"), shape[1], order.size, header.kappa)
        indices = rec.decode_indices(container.section(level + "IDX"), plan)
        sample = rec.decode(mu_p, sd_p, plan, seed, indices)
        if skip is not None:
            channels = shape[1]
            symbols = prior_skip.decode_skip(skip, channels)
            mask = prior_skip.skip_mask(sd_p.reshape(channels, -1), symbols).reshape(-1)
            np.copyto(sample, mu_p, where=mask)
    except ValueError as exc:
        raise bbi.BbiError(f"corrupt file: {exc}") from exc
    return _unordered(sample, order, shape)


def _latent_channels(model_name: str) -> tuple[int, int, int] | None:
    """(z channels, y channels, stride) of an installed model, read from its ONNX priors (no
    torch), or None."""
    try:
        tr = runtime.load(model_name)
        if tr is None:
            return None
        z_mean = tr.z_prior(0.5, 1, 1)[0]
        y_mean = tr.y_prior(np.zeros(z_mean.shape, np.float32), 0.5)[0]
        return int(z_mean.shape[1]), int(y_mean.shape[1]), tr.stride
    except Exception:  # info must describe any file; plan facts are a bonus
        return None


def _plan_facts(data: bytes, header, table: tuple) -> dict:
    """Block count and the file size the block plans fix before any candidate search (index bits
    + plan and container bytes), beside the actual size. Needs the model's channel counts: empty
    when the model is not installed."""
    sections = {s.tag: s for s in table}  # the reader's section table: payloads sliced, not parsed again
    model = _latent_channels(header.model_name)
    if model is None or not all(t in sections for t in ("ZPLN", "ZIDX", "YPLN", "YIDX")):
        return {}
    z_channels, y_channels, stride = model
    ph, pw = _padded(header, stride)
    blocks = index_bits = 0
    for level, c, step in (("Z", z_channels, stride), ("Y", y_channels, tiling.LATENT_STRIDE)):
        try:
            s = sections[level + "PLN"]
            plan = _read_plan(bytes(data[s.offset:s.offset + s.length]), c, ph * pw // step**2, header.kappa)
        except ValueError as exc:
            raise bbi.BbiError(f"corrupt file: {exc}") from exc
        blocks += plan.n_blocks
        index_bits += plan.index_bits
    padding = sum(8 * sections[level + "IDX"].length for level in "ZY") - index_bits
    return dict(blocks=blocks, index_bits=index_bits, predicted_bits=8 * len(data) - padding,
                actual_bits=8 * len(data))


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
                section_bytes=sections, **_plan_facts(data, h, meta.sections))
