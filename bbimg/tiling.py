"""Tiled transforms: every stage of the codec in bounded memory, for any image size, without seams.

Each of the model's transforms maps one spatial grid to another: the analysis ``g_a`` pixels to y
(1/16 resolution), the synthesis ``g_s`` y to pixels, the hyper analysis ``h_a`` y to z (1/4 of
y) and the y prior ``h_s`` z to the parameters of p(y | z). Their activations are many times the
size of their inputs (at 8192 x 8192 in fp32, GBs for ``g_a``/``g_s``; for the y prior 450
channels at y resolution, about 1 GB, and 4x that at the format's largest size), so above
:data:`THRESHOLD_PIXELS` each transform runs tile by tile: :func:`map_tiles` cuts the *coarser*
grid of the two (y for ``g_a``/``g_s``, z for ``h_a``/``h_s``) into tiles, computes each tile with
a halo of context on every side (clipped at the border) and keeps the tile's own part. What stays
whole is what the bitstream needs whole: the image, one y and one z latent with their posterior
and prior parameters.

All four are stacks of 5x5 stride-2 convolutions (transposed in ``g_s``/``h_s``), with one 3x3
stride-1 convolution in ``h_a``/``h_s`` and pointwise nonlinearities (GDN, leaky ReLU, FiLM) in
between (``bbimg/models/vae.py``), so each output depends on a bounded neighbourhood of its input.
A 5x5 stride-2 convolution's output i reads inputs 2i-2..2i+2; a transposed one's output o reads
inputs (o-2)/2..(o+2)/2. Composing the layers, in units of the coarse grid:

* ``g_a``: y[j] reads pixels 16j-30 .. 16j+30 (radius 2 * (1 + 2 + 4 + 8) = 30 px < 2 latents);
* ``g_s``: pixel p reads y within p/16 +- (1 + 1/2 + 1/4 + 1/8) latents (< 2);
* ``h_a``: z[j] reads y 4j-7 .. 4j+7 (3x3, then two 5x5 stride 2: 1 + 2 + 4 = 7 y < 2 z);
* ``h_s``: y position p reads z within p/4 +- (1/4 + 1/2 + 1) = 1.75 z positions (< 2).

So a halo of 2 coarse positions, with tile origins on the coarse grid (every layer's stride phase
then matches the whole-image computation, and zero padding happens only at the true border),
computes every kept value from exactly the inputs it would see untiled: tiled and untiled results
agree up to floating-point summation order (``tests/test_tiling.py`` checks this, and that a
smaller halo shows seams). Every transform uses that halo: a wider one only adds work.

The tiles are numpy arrays handed to the back end's transform (``bbimg.transforms``: ONNX Runtime
or torch), so one implementation serves both.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .geometry import LATENT_STRIDE, MODEL_STRIDE, Z_STRIDE, padded_size
from .threads import available as available_threads

__all__ = ["LATENT_STRIDE", "Z_STRIDE", "TILE_LATENTS", "HALO_LATENTS", "PRIOR_TILE", "PRIOR_HALO",
           "THRESHOLD_PIXELS", "KL_CHUNK", "should_tile", "tiles", "map_tiles", "kl_bits"]

TILE_LATENTS = 64           # kept part of an analysis/synthesis tile: 64 y positions = 1024 pixels square
HALO_LATENTS = 2            # their context on each side: 32 pixels, the receptive fields' bound (above)
PRIOR_TILE = 32             # kept part of a hyper/y-prior tile: 32 z positions = 2048 pixels square
PRIOR_HALO = 2              # their context on each side, in z positions (the receptive radius is 1.75)
THRESHOLD_PIXELS = 2048 * 2048  # padded images with more pixels than this are tiled
KL_CHUNK = 1 << 17          # elements per chunk of the KL computation (float64 temporaries in cache)


def should_tile(height: int, width: int, stride: int = MODEL_STRIDE) -> bool:
    """True when the codec should run the transforms tile by tile: the image, padded to the
    model's ``stride``, has more than :data:`THRESHOLD_PIXELS` pixels."""
    padded_height, padded_width = padded_size(height, width, stride)
    return padded_height * padded_width > THRESHOLD_PIXELS


def tiles(n: int, tile: int | None = None, halo: int | None = None) -> list[tuple[int, int, int, int]]:
    """Cut ``n`` grid positions into (keep_lo, keep_hi, ext_lo, ext_hi) ranges along one axis.

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


Read = Callable[[int, int, int, int], np.ndarray]
Sink = Callable[[int, int, Sequence[np.ndarray]], None]


def map_tiles(fn: Callable[[np.ndarray], Sequence[np.ndarray]], read: Read, rows: int, cols: int, *,
              scale: int, tile: int | None, halo: int, sink: Sink | None = None) -> list[np.ndarray] | None:
    """Apply a transform to a ``rows`` x ``cols`` grid tile by tile, keeping each tile's own part.

    ``read(r0, r1, c0, c1)`` returns the transform's input for grid rows r0..r1 and columns c0..c1
    (the extended tile); ``fn`` returns arrays (1, C, h * scale, w * scale) for an input of h x w
    grid positions. ``tile`` None runs the whole grid in one call. The kept part of every output
    goes to ``sink(row, col, parts)`` (offsets in output units) when one is given; otherwise the
    parts are assembled into whole (1, C, rows * scale, cols * scale) float32 arrays, returned."""
    if tile is None:
        tile = max(rows, cols, 1)
    whole: list[np.ndarray] | None = None
    pool = None
    try:
        for r0, r1, er0, er1 in tiles(rows, tile, halo):
            for c0, c1, ec0, ec1 in tiles(cols, tile, halo):
                outs = fn(read(er0, er1, ec0, ec1))
                keep = (slice((r0 - er0) * scale, (r1 - er0) * scale),
                        slice((c0 - ec0) * scale, (c1 - ec0) * scale))
                parts = [o[..., keep[0], keep[1]] for o in outs]
                if sink is not None:
                    sink(r0 * scale, c0 * scale, parts)
                    continue
                if whole is None:
                    whole = [np.empty((1, p.shape[1], rows * scale, cols * scale), np.float32) for p in parts]
                    if len(whole) > 1 and tile < max(rows, cols) and available_threads() > 1:
                        from concurrent.futures import ThreadPoolExecutor  # tiled images only

                        pool = ThreadPoolExecutor(min(len(whole), available_threads()))

                def put(dest: np.ndarray, part: np.ndarray, r0=r0, r1=r1, c0=c0, c1=c1) -> None:
                    dest[..., r0 * scale:r1 * scale, c0 * scale:c1 * scale] = part

                if pool is None:
                    for dest, part in zip(whole, parts):
                        put(dest, part)
                else:
                    # The outputs side by side, each copy mostly the first touches of its whole
                    # array's pages: a 12 MP photo's y prior spent 0.1 s in them on one core.
                    list(pool.map(put, whole, parts))
                del outs, parts
    finally:
        if pool is not None:
            pool.shutdown()
    return whole


def kl_bits(mu_q: np.ndarray, sd_q: np.ndarray, mu_p: np.ndarray, sd_p: np.ndarray,
            chunk: int = KL_CHUNK) -> np.ndarray:
    """``bbimg.rec.kl_bits`` in chunks on every CPU: the same values (it is elementwise), without
    float64 copies of all four inputs at once (about 1.3 GB extra at 8192x8192). numpy releases
    the GIL, and chunks whose temporaries stay in cache run several times faster than one pass:
    a 12 MP photo's y (7.6 M dims) in 0.045 s on 2 threads against 0.35-0.63 s in 4 M chunks.
    Small chunks also keep the helper threads' malloc arenas small (1 M chunks left ~85 MB
    resident after the encoder's peak)."""
    from concurrent.futures import ThreadPoolExecutor

    from . import rec

    n = int(np.asarray(mu_q).shape[0])
    if n <= chunk or not all(np.asarray(a).shape == (n,) for a in (sd_q, mu_p, sd_p)):
        return rec.kl_bits(mu_q, sd_q, mu_p, sd_p)
    out = np.empty(n, np.float64)

    def part(lo: int) -> None:
        hi = min(lo + chunk, n)
        out[lo:hi] = rec.kl_bits(mu_q[lo:hi], sd_q[lo:hi], mu_p[lo:hi], sd_p[lo:hi])

    starts = range(0, n, chunk)
    with ThreadPoolExecutor(max(1, min(available_threads(), len(starts)))) as pool:
        for _ in pool.map(part, starts):  # re-raises a chunk's error
            pass
    return out
