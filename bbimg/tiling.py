"""Tiled analysis and synthesis transforms: large images in bounded memory, without seams.

The expensive tensors of the codec are the full-resolution activations of the analysis transform
``g_a`` (image -> y) and the synthesis transform ``g_s`` (y -> image): at 8192x8192 in fp32 they
are many GB. Everything else lives on the latent grids (y at 1/16, z at 1/64 resolution) and is
small enough to keep whole, so the bitstream keeps its structure: one y and one z for the image.

Tiles are cut on the *latent* grid (16 pixels per y position). Each tile is computed with a halo of
:data:`HALO_LATENTS` latent positions on every side (clipped at the image border) and the halo is
cropped away. Both transforms are stacks of stride-2 5x5 convolutions (``g_s`` transposed) with
pointwise nonlinearities, so an output depends on a bounded neighbourhood only:

* ``g_a``: y[j] sees pixels 16j-30 .. 16j+30 (radius 2 * (1 + 2 + 4 + 8) = 30 px < 2 latents);
* ``g_s``: pixel 16j+r sees y[j-2 .. j+2] (radius 1 + 1/2 + 1/4 + 1/8 < 2 latents).

With a halo of at least 2 latents and tile origins on the 16-pixel grid (so every layer's stride
phase matches the whole-image computation), every kept value is computed from exactly the inputs it
would see untiled, so tiled and untiled results agree up to floating-point summation order (no seams;
``tests/test_hardening.py`` checks this). The halo is 4 latents for margin.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["TILE_LATENTS", "HALO_LATENTS", "THRESHOLD_PIXELS", "KL_CHUNK", "should_tile", "tiles",
           "encode_y", "decode_pixels", "kl_bits"]

LATENT_STRIDE = 16          # pixels per y position
TILE_LATENTS = 64           # kept part of a tile: 64 latents = 1024 pixels square
HALO_LATENTS = 4            # context on each side: 64 pixels (2 latents are enough, see above)
THRESHOLD_PIXELS = 2048 * 2048  # padded images with more pixels than this are tiled
KL_CHUNK = 1 << 22          # elements per chunk of the KL computation (bounds float64 temporaries)


def _no_grad(fn):
    """torch.no_grad, imported on first call: this module is also used where torch is not (KL, tiles)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper


def should_tile(height: int, width: int, stride: int = 64) -> bool:
    """True when the codec should run the transforms tile by tile: the image, padded to the
    model's ``stride``, has more than :data:`THRESHOLD_PIXELS` pixels."""
    return (-(-height // stride) * stride) * (-(-width // stride) * stride) > THRESHOLD_PIXELS


def tiles(n: int, tile: int | None = None, halo: int | None = None) -> list[tuple[int, int, int, int]]:
    """Cut ``n`` latent positions into (keep_lo, keep_hi, ext_lo, ext_hi) ranges along one axis.

    The kept ranges partition [0, n); the extended ranges add ``halo`` positions on each side,
    clipped to [0, n)."""
    tile = TILE_LATENTS if tile is None else tile
    halo = HALO_LATENTS if halo is None else halo
    if tile < 1 or halo < 0:
        raise ValueError("tile must be >= 1 and halo >= 0")
    out = []
    for lo in range(0, n, tile):
        hi = min(lo + tile, n)
        out.append((lo, hi, max(lo - halo, 0), min(hi + halo, n)))
    return out


@_no_grad
def encode_y(model, pixels: np.ndarray, film, device, *, tile: int | None = None, halo: int | None = None):
    """``model.encode_y`` on the image padded to the model's stride, computed tile by tile.

    ``pixels``: (H, W, 3) uint8. The padding replicates the last row and column, as
    ``pad_to_multiple`` does, and only one tile is ever converted to float."""
    import torch

    from .models.vae import Gaussian

    stride = model.cfg.stride
    height, width = pixels.shape[:2]
    ph, pw = -(-height // stride) * stride, -(-width // stride) * stride
    lh, lw = ph // LATENT_STRIDE, pw // LATENT_STRIDE
    mean = log_scale = None
    for r0, r1, er0, er1 in tiles(lh, tile, halo):
        rows = np.minimum(np.arange(er0 * LATENT_STRIDE, er1 * LATENT_STRIDE), height - 1)
        band = pixels[rows]
        for c0, c1, ec0, ec1 in tiles(lw, tile, halo):
            cols = np.minimum(np.arange(ec0 * LATENT_STRIDE, ec1 * LATENT_STRIDE), width - 1)
            x = torch.from_numpy(np.ascontiguousarray(band[:, cols])).to(device)
            x = x.permute(2, 0, 1)[None].float().div_(255.0)
            q = model.encode_y(x, film)
            if mean is None:
                shape = (1, q.mean.shape[1], lh, lw)
                mean = torch.empty(shape, dtype=q.mean.dtype, device=q.mean.device)
                log_scale = torch.empty(shape, dtype=q.log_scale.dtype, device=q.log_scale.device)
            keep = (slice(None), slice(None), slice(r0 - er0, r1 - er0), slice(c0 - ec0, c1 - ec0))
            mean[:, :, r0:r1, c0:c1] = q.mean[keep]
            log_scale[:, :, r0:r1, c0:c1] = q.log_scale[keep]
            del q, x
    return Gaussian(mean, log_scale)


def to_uint8_hwc(x_hat) -> np.ndarray:
    """A decoded [3, H, W] tensor in [0, 1] as 8-bit H x W x 3 pixels (round half to even, as the
    ONNX path's numpy does, so both backends quantise identically)."""
    import torch

    return x_hat.detach().clamp(0, 1).mul_(255).round_().to("cpu", torch.uint8).permute(1, 2, 0).numpy()


@_no_grad
def decode_pixels(model, y: torch.Tensor, film, height: int, width: int, *, tile: int | None = None,
                  halo: int | None = None) -> np.ndarray:
    """``model.decode`` of the latent ``y`` (1, M, H/16, W/16), tile by tile, cropped to
    ``height`` x ``width`` and quantised to (height, width, 3) uint8 as the untiled decoder does."""
    lh, lw = y.shape[2], y.shape[3]
    out = np.empty((height, width, 3), np.uint8)
    s = LATENT_STRIDE
    for r0, r1, er0, er1 in tiles(lh, tile, halo):
        if r0 * s >= height:
            break
        for c0, c1, ec0, ec1 in tiles(lw, tile, halo):
            if c0 * s >= width:
                break
            x = model.decode(y[:, :, er0:er1, ec0:ec1], film)
            y0, y1 = r0 * s, min(r1 * s, height)
            x0, x1 = c0 * s, min(c1 * s, width)
            crop = x[0, :, y0 - er0 * s:y1 - er0 * s, x0 - ec0 * s:x1 - ec0 * s]
            out[y0:y1, x0:x1] = to_uint8_hwc(crop)
            del x, crop
    return out


def kl_bits(mu_q: np.ndarray, sd_q: np.ndarray, mu_p: np.ndarray, sd_p: np.ndarray,
            chunk: int = KL_CHUNK) -> np.ndarray:
    """``bbimg.rec.kl_bits`` in chunks: the same values (it is elementwise), without float64
    copies of all four inputs at once (about 1.3 GB extra at 8192x8192)."""
    from . import rec

    n = int(np.asarray(mu_q).shape[0])
    if n <= chunk or not all(np.asarray(a).shape == (n,) for a in (sd_q, mu_p, sd_p)):
        return rec.kl_bits(mu_q, sd_q, mu_p, sd_p)
    out = np.empty(n, np.float64)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        out[lo:hi] = rec.kl_bits(mu_q[lo:hi], sd_q[lo:hi], mu_p[lo:hi], sd_p[lo:hi])
    return out
