"""The codec pipeline: glue between the model's transforms, the REC coder and the container.

Encode: pixels -> y posterior (analysis) -> z posterior (hyper analysis) -> z coded by REC against
the factorised prior -> p(y | z as decoded) -> y coded by REC against it -> .bbi sections.
Decode runs the same stages backwards from the file. The transforms are numpy in, numpy out
(``bbimg.transforms``: ONNX Runtime on the CPU, torch for CUDA; tiled for large images), each
level's REC stage is a ``bbimg.latent_coder.LatentCoder`` and ``bbimg.format`` stores the bytes.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Union

import numpy as np
from PIL import Image

from . import format as bbi
from . import runtime
from .defaults import DEFAULT_EFFORT, DEFAULT_QUALITY
from .alpha import decode_alpha, encode_alpha
from .geometry import LATENT_STRIDE, padded_size
from .image import COLOUR_GREY, PreparedImage, prepare, restore
from .latent_coder import (Y_LEVEL, Z_BLOCK_RATIO_GAIN, Z_LEVEL, Gaussian, LatentCoder, latent_sections,
                           read_level_plan)
from .model_files import DEFAULT_MODEL, find_by_hash
from .rec import DEFAULT_KAPPA, DEFAULT_TEMPERATURE, plan_prior, prior_skip
from .rec.channel_plan import DEFAULT_BLOCK_RATIO
from .transforms import load_transforms

if TYPE_CHECKING:
    from .effort import EncoderSearch

__all__ = ["encode", "decode", "info", "model_of", "quality_to_t", "WRITE_VERSION", "EncodeStats", "ImageTooLargeError",
           "DEFAULT_QUALITY", "DEFAULT_KAPPA", "DEFAULT_TEMPERATURE", "MAX_PIXELS", "MAX_DECODE_PIXELS",
           "ENCODE_STAGES", "DECODE_STAGES"]

#: The format's own limit on width x height (sides also <= 65535).
MAX_PIXELS = bbi.MAX_PIXELS
#: ``decode`` refuses files claiming more pixels than this unless ``max_pixels`` raises it: a guard
#: against decompression bombs (a ~150-byte valid file can claim 2^28 pixels), like Pillow's
#: ``Image.MAX_IMAGE_PIXELS``. Module setting: assign to change the default for the process.
MAX_DECODE_PIXELS = 2**27
#: Container version ``encode`` writes (bbimg.format.write): 2.0 names the model by an 8-byte
#: prefix of its weights' SHA-256; a major version 1 writes the 1.x layout (model name and a
#: 16-byte prefix) at the lowest minor version that describes the file. Module setting.
WRITE_VERSION = bbi.VERSION
#: Bytes of the weights' SHA-256 a 2.0 file records.
HASH_BYTES = 8
#: Section payloads that are not side information: the candidate indices, alpha and metadata.
_PAYLOAD_TAGS = ("ZIDX", "YIDX", "ALPH", "ICCP", "EXIF")
#: Stages reported to ``progress(stage)`` as each begins, in order.
ENCODE_STAGES = ("analysis", "refinement", "coding z", "coding y")  # refinement at high effort only
DECODE_STAGES = ("decoding z", "decoding y", "synthesis")

Progress = Callable[[str], None]
ImageInput = Union[str, "os.PathLike[str]", BinaryIO, Image.Image, np.ndarray, bytes]
DataInput = Union[str, "os.PathLike[str]", BinaryIO, bytes, bytearray, memoryview]


class ImageTooLargeError(bbi.BbiError):
    """A file claims more pixels than the decode limit (``max_pixels`` / MAX_DECODE_PIXELS)."""


def quality_to_t(quality: float) -> float:
    """User quality 1..100 (higher = more bits) -> the model's trade-off parameter t in [0, 1]."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return (float(quality) - 1.0) / 99.0


@dataclass
class EncodeStats:
    kl_bits: float          # KL(q||p) of both levels: the ideal rate
    index_bits: int         # bits spent on candidate indices
    side_bits: int          # bits of the block plans and skip symbols
    file_bytes: int
    blocks: int


@dataclass(frozen=True)
class _CoderSettings:
    """How the REC stage codes both levels of one file (all recorded in the file or its plans)."""

    seed: int
    kappa: int
    block_ratio: float
    z_ratio_gain: float
    skip_ratio: float
    temperature: float | None
    device: str
    predictions: dict | None = None  # the model's plan-unit tables at this quality (plan_prior)

    def z_coder(self) -> LatentCoder:
        return LatentCoder(Z_LEVEL, self.seed, self.kappa, block_ratio=self.block_ratio * self.z_ratio_gain,
                           temperature=self.temperature, device=self.device,
                           prediction=(self.predictions or {}).get("Z"))

    def y_coder(self) -> LatentCoder:
        return LatentCoder(Y_LEVEL, self.seed, self.kappa, block_ratio=self.block_ratio, skip_ratio=self.skip_ratio,
                           temperature=self.temperature, device=self.device,
                           prediction=(self.predictions or {}).get("Y"))


def _posteriors(prep: PreparedImage, tr, t: float, report: Progress,
                search: "EncoderSearch | None" = None) -> tuple[np.ndarray, ...]:
    """(y mean, y scale, z mean, z scale) of the image at quality t: the analysis transform's, then
    refined at high effort."""
    report("analysis")
    tr.prepare_encode(t)
    y_mean, y_scale = tr.analysis_pixels(prep.pixels, t)
    z_mean, z_scale = tr.hyper(y_mean, t)
    if search is not None and search.effort.refine_steps:
        report("refinement")
        y_mean, y_scale, z_mean, z_scale = search.refine(y_mean, y_scale, z_mean, z_scale)
    return y_mean, y_scale, z_mean, z_scale


def _code_latents(prep: PreparedImage, tr, t: float, coder: _CoderSettings, progress: Progress | None,
                  size_only: bool, search: "EncoderSearch | None" = None,
                  posteriors: tuple[np.ndarray, ...] | None = None) -> tuple[list, EncodeStats]:
    """The encoder's stages: the posteriors (``posteriors`` when given, copied), z by REC, the
    prior p(y | z) the decoder will have, y by REC (candidates chosen by the decoded image at high
    effort unless ``size_only``)."""
    report = progress or (lambda stage: None)
    if posteriors is None:
        y_mean, y_scale, z_mean, z_scale = _posteriors(prep, tr, t, report, search)
    else:
        y_mean, y_scale, z_mean, z_scale = (a.copy() for a in posteriors)
    y_posterior, z_posterior = Gaussian(y_mean, y_scale), Gaussian(z_mean, z_scale)
    del y_mean, y_scale, z_mean, z_scale  # handed to the coders, which free them as they go
    z_rows, z_cols = z_posterior.mean.shape[2:]
    report("coding z")
    z = coder.z_coder().compress(z_posterior, Gaussian(*tr.z_prior(t, z_rows, z_cols)))
    y_prior = Gaussian(*tr.y_prior(z.sample, t))
    choose = None
    if search is not None and not size_only:
        y_posterior = Gaussian(*search.refine_y(*y_posterior.release(), y_prior.mean, y_prior.scale))
        choose = search.chooser()
    report("coding y")
    y = coder.y_coder().compress(y_posterior, y_prior, size_only=size_only, choose=choose, want_sample=False)
    stats = EncodeStats(z.kl_bits + y.kl_bits, z.index_bits + y.index_bits, z.side_bits + y.side_bits, 0,
                        z.blocks + y.blocks)
    return z.sections + y.sections, stats


def _colour_mode(prep: PreparedImage) -> "bbi.ColourMode":
    if prep.colour == COLOUR_GREY:
        return bbi.ColourMode.LA if prep.had_alpha else bbi.ColourMode.L
    return bbi.ColourMode.RGBA if prep.had_alpha else bbi.ColourMode.RGB


_IMAGE_TYPES = "a path, a binary file, a PIL image, a uint8 array or encoded image bytes"


def _as_pil(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)) or hasattr(image, "read"):
        return Image.open(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image)))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError("arrays must be uint8 with shape (H, W), (H, W, 3) or (H, W, 4)")
        return Image.fromarray(image)
    raise TypeError(f"expected {_IMAGE_TYPES}, got {type(image).__name__}")


def _as_bytes(data: DataInput) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            return f.read()
    if hasattr(data, "read"):
        out = data.read()
        if not isinstance(out, (bytes, bytearray)):
            raise TypeError(f"expected a binary file, got a file that reads {type(out).__name__}")
        return bytes(out)
    raise TypeError(f"expected .bbi data as a path, a binary file or bytes, got {type(data).__name__}")


def encode(image: ImageInput, quality: float = DEFAULT_QUALITY, *, bpp: float | None = None,
           model: str = DEFAULT_MODEL, device: str = "cpu", seed: int = 0, kappa: int | None = None,
           temperature: float | None = DEFAULT_TEMPERATURE, block_ratio: float = DEFAULT_BLOCK_RATIO,
           z_ratio_gain: float = Z_BLOCK_RATIO_GAIN, skip_ratio: float = prior_skip.DEFAULT_SKIP_RATIO,
           effort: int = DEFAULT_EFFORT, exact: bool = False, progress: Progress | None = None,
           stats: list | None = None) -> bytes:
    """Compress an image to .bbi bytes.

    ``image``: a path, a binary file, a PIL image, a uint8 array ((H, W), (H, W, 3) or (H, W, 4))
    or encoded image bytes. ``quality`` 1..100 (higher = more bits) or ``bpp``: a target file size
    in bits per pixel, met by searching the model's continuous quality (the size is known before
    any candidate search). ``temperature`` None (default) picks each block's candidate by the
    "nearest" rule; a number tau >= 0 samples it in proportion to q^(1/tau)/p instead (the file
    size does not change). ``effort`` 1..9: below the default (5), fewer REC candidates per block
    (``kappa`` 12..15 bits: 2x to 16x less candidate search, slightly larger or worse files); above
    it, encode time is spent on posterior refinement and decoder-aware candidate choice
    (bbimg.effort; needs torch); the decoder is the same at every effort. ``kappa`` (8..24) overrides
    the effort's. An alpha plane is kept losslessly; the colour under fully transparent
    pixels is filled smoothly (fewer bytes, invisible) unless ``exact`` (as cwebp -exact).
    ``progress(stage)`` is called as each of ENCODE_STAGES begins.
    """
    pil = _as_pil(image)
    if str(device) == "cpu" and (ort := runtime.load(model)) is not None:
        ort.prepare_analysis(pil.width * pil.height)  # made while the image is decoded and prepared
    prep = prepare(pil, exact=exact)
    h, w = prep.pixels.shape[:2]
    if h * w > MAX_PIXELS or max(h, w) > 65535:
        raise ValueError(f"image of {w}x{h} is larger than the format allows")
    if not 0 <= seed < 2**64:
        raise ValueError("seed must be in [0, 2**64)")
    if temperature is not None and not (0 <= temperature and math.isfinite(temperature)):
        raise ValueError(f"temperature must be None or a finite number >= 0, got {temperature}")
    if not (0.1 <= block_ratio <= 10):
        raise ValueError(f"block_ratio must be in [0.1, 10], got {block_ratio}")
    if not (0.1 <= z_ratio_gain <= 10):
        raise ValueError(f"z_ratio_gain must be in [0.1, 10], got {z_ratio_gain}")
    if not (0 <= skip_ratio <= 10):
        raise ValueError(f"skip_ratio must be in [0, 10], got {skip_ratio}")
    if bpp is not None and not (bpp > 0 and math.isfinite(bpp)):
        raise ValueError(f"target bpp must be a positive number, got {bpp}")
    from .effort import EncoderSearch, settings as effort_settings  # encoding only: a decode does not import it

    search_settings = effort_settings(effort)
    kappa = search_settings.kappa if kappa is None else kappa
    if search_settings.needs_torch and temperature is not None:
        raise ValueError("efforts above the default choose candidates themselves: use temperature=None")
    tr = load_transforms(model, device, h, w)
    alpha_section = None if prep.alpha is None else bbi.Section("ALPH", encode_alpha(prep.alpha))

    refined: dict[float, tuple[np.ndarray, ...]] = {}  # posteriors refined at quality t, kept for --bpp

    def build(t: float, ratio: float, size_only: bool = False, effort_search: bool = True) -> tuple[bytes, EncodeStats]:
        """The file at quality t and block ratio ``ratio``; ``size_only``: its size, without the
        candidate search; ``effort_search``: with this effort's refinement and candidate choice."""
        q_int = int(round(quality)) if bpp is None else max(1, min(100, int(round(1 + 99 * t))))
        coder = _CoderSettings(seed, kappa, ratio, z_ratio_gain, skip_ratio, temperature, device,
                               plan_prior.predictions(tr.sha256, t, kappa))
        search = EncoderSearch(model, device, prep.pixels, t, search_settings, seed) \
            if effort_search and search_settings.needs_torch else None
        posteriors = None
        if search is not None and search_settings.refine_steps and bpp is not None:
            if t not in refined:
                refined[t] = _posteriors(prep, tr, t, (None if size_only else progress) or (lambda stage: None),
                                         search)
            posteriors = refined[t]
        sections, st = _code_latents(prep, tr, t, coder, None if size_only else progress, size_only, search,
                                     posteriors)
        if alpha_section is not None:
            sections.append(alpha_section)
        if prep.icc_profile:
            sections.append(bbi.Section("ICCP", prep.icc_profile, required=False))
        v1 = WRITE_VERSION[0] == 1
        header = bbi.Header(width=w, height=h, model_name=tr.name if v1 else None,
                            weights_hash=tr.sha256[:16 if v1 else HASH_BYTES], quality_t=t, quality_q=q_int,
                            seed=seed, kappa=kappa,
                            temperature=0.0 if temperature is None else temperature,
                            colour_mode=_colour_mode(prep), bit_depth=min(prep.bit_depth, 16))
        data = bbi.write(bbi.Container(header=header, sections=tuple(sections)), version=1 if v1 else WRITE_VERSION)
        st.file_bytes = len(data)
        return data, st

    if bpp is None:
        data, st = build(quality_to_t(quality), block_ratio)
    else:
        def bpp_of(t: float, r: float) -> float:  # the default effort's size, known before any search
            return len(build(t, r, size_only=True, effort_search=False)[0]) * 8 / (h * w)

        t, ratio = _search_bpp(bpp_of, bpp, block_ratio)
        if search_settings.refine_steps:
            # Refinement lowers the rate by a few percent, and the size is known once the refined
            # posteriors are planned: aim the default-effort search off target by what refinement
            # saved, once, then meet the target with the block ratio on the refined posteriors
            # (a size probe there costs no analysis and no refinement).
            def refined_bpp(t: float, r: float) -> float:
                return len(build(t, r, size_only=True)[0]) * 8 / (h * w)

            got = refined_bpp(t, ratio)
            if abs(got / bpp - 1) > 0.01:
                t, ratio = _search_bpp(bpp_of, bpp * bpp / got, block_ratio)
                got = refined_bpp(t, ratio)
            if abs(got / bpp - 1) > 0.01:
                lo, hi = math.log(max(0.1, ratio / 1.5)), math.log(min(10.0, ratio * 1.5))
                ratio = math.exp(_bisect(lambda x: refined_bpp(t, math.exp(x)), lo, hi, bpp)[0])
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


def decode(data: DataInput, *, device: str = "cpu", max_pixels: int | None = None,
           progress: Progress | None = None, fast: bool = False) -> Image.Image:
    """Decompress .bbi data (a path, a binary file or bytes) to a PIL image (mode RGB or L, ICC
    profile attached).

    ``fast``: run the model's light synthesis (a decoder option of the model, not of the file:
    about half the decode time at a small, stated loss of quality, docs/model.md); ValueError where
    the model has none installed or runs on torch.

    Files claiming more than ``max_pixels`` pixels (default: the module's MAX_DECODE_PIXELS) raise
    ImageTooLargeError before anything is allocated; corrupt data raises BbiError.
    ``progress(stage)`` is called as each of DECODE_STAGES begins."""
    container = bbi.read(_as_bytes(data))
    h = container.header
    limit = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    if h.width * h.height > limit:
        raise ImageTooLargeError(f"image of {h.width}x{h.height} ({h.width * h.height:,} pixels) is above the decode "
                                 f"limit of {limit:,} pixels")
    for tags in latent_sections():
        if all(container.section(tag) is None for tag in tags):
            raise bbi.BbiError(f"corrupt file: missing required section {tags[0]}")
    described = bbi.decoded_description(h, container.sections)
    alpha_payload = container.section("ALPH")
    alpha = None if alpha_payload is None else decode_alpha(alpha_payload, h.width, h.height)
    name = model_of(h)
    if name is None:
        raise bbi.BbiError(f"file needs model weights {h.weights_hash.hex()}, which are not installed")
    try:
        tr = load_transforms(name, device, h.height, h.width)
    except ValueError as exc:
        raise bbi.BbiError(f"file needs model {name!r}, which is not installed") from exc
    if not h.matches_weights(tr.sha256):
        raise bbi.BbiError(f"file was coded with other weights of model {name!r} than the installed ones")
    if fast and not tr.has_fast_synthesis:
        raise ValueError(f"model {name!r} has no fast synthesis here (it needs its {name}.synthesis-fast.onnx "
                         "and the ONNX Runtime back end): decode without fast")
    report = progress or (lambda stage: None)
    t = h.quality_t
    tr.prepare_decode(t, fast)
    padded_h, padded_w = padded_size(h.height, h.width, tr.stride)
    report("decoding z")
    z_prior = Gaussian(*tr.z_prior(t, padded_h // tr.stride, padded_w // tr.stride))
    predictions = plan_prior.predictions(h.weights_hash, t, h.kappa)
    z_hat = LatentCoder(Z_LEVEL, h.seed, h.kappa, device=device,
                        prediction=predictions.get("Z")).decompress(z_prior, container)
    report("decoding y")
    y_hat = LatentCoder(Y_LEVEL, h.seed, h.kappa, device=device,
                        prediction=predictions.get("Y")).decompress(Gaussian(*tr.y_prior(z_hat, t)), container)
    report("synthesis")
    pixels = tr.synthesis_pixels(y_hat, t, h.height, h.width, fast=fast)  # tiles above a size threshold
    colour = "L" if described["mode"].startswith("L") else "RGB"
    return restore(np.ascontiguousarray(pixels), colour, container.section("ICCP"), alpha=alpha)


def model_of(header: "bbi.Header") -> str | None:
    """The model a file needs: the name a 1.x file records, or the installed model whose weights'
    SHA-256 begins with a 2.0 file's ``weights_hash`` (None when none is installed)."""
    return header.model_name if header.model_name is not None else find_by_hash(header.weights_hash)


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
    name = model_of(header)
    model = None if name is None else _latent_channels(name)
    if model is None or not all(any(t in sections for t in tags) for tags in latent_sections()):
        return {}
    z_channels, y_channels, stride = model
    ph, pw = padded_size(header.height, header.width, stride)
    payloads = {tag: bytes(data[s.offset:s.offset + s.length]) for tag, s in sections.items() if "PL" in tag}
    predictions = plan_prior.predictions(header.weights_hash, header.quality_t, header.kappa)
    blocks = index_bits = 0
    for level, c, step in ((Z_LEVEL, z_channels, stride), (Y_LEVEL, y_channels, LATENT_STRIDE)):
        try:
            plan = read_level_plan(payloads, level, c, ph * pw // step**2, header.kappa, predictions.get(level.tag))
        except ValueError as exc:
            raise bbi.BbiError(f"corrupt file: {exc}") from exc
        blocks += plan.n_blocks
        index_bits += plan.index_bits
    padding = sum(8 * sections[level + "IDX"].length for level in "ZY") - index_bits
    return dict(blocks=blocks, index_bits=index_bits, predicted_bits=8 * len(data) - padding,
                actual_bits=8 * len(data))


def info(data: DataInput) -> dict:
    """Header facts of .bbi data (a path, a binary file or bytes) without decoding pixels.

    ``model``: the model's name (recorded by a 1.x file, looked up by weights hash for a 2.0 file),
    or the hash in hex when no installed model matches (``model_installed`` says which).
    ``index_bytes``: the candidate index payloads (ZIDX, YIDX); ``side_bytes``: everything but the
    payloads of ZIDX, YIDX, ALPH, ICCP and EXIF (header, section framing, CRCs, block plans)."""
    data = _as_bytes(data)
    meta = bbi.read_info(data)
    h = meta.header
    sections = {s.tag: s.length for s in meta.sections}
    name = model_of(h)
    return dict(**bbi.decoded_description(h, meta.sections), bytes=meta.total_size, bpp=meta.bpp,
                model=h.weights_hash.hex() if name is None else name,
                model_installed=find_by_hash(h.weights_hash) is not None,
                side_bytes=meta.total_size - sum(n for tag, n in sections.items() if tag in _PAYLOAD_TAGS),
                index_bytes=sections.get("ZIDX", 0) + sections.get("YIDX", 0),
                weights_sha256=h.weights_hash.hex(), quality=h.quality_q, quality_t=h.quality_t, seed=h.seed,
                kappa=h.kappa, temperature=h.temperature, colour=h.colour_mode.name,
                version="%d.%d" % meta.version,
                sections=[dict(tag=s.tag, bytes=s.length, required=s.required) for s in meta.sections],
                section_bytes=sections, **_plan_facts(data, h, meta.sections))
