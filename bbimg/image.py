"""What bbimg does with the many kinds of input image Pillow can open, and how it gives them back.

The model codes 8-bit RGB; alpha is kept beside it, losslessly (``bbimg.alpha``, the ``ALPH``
section). Everything else is mapped to 8-bit RGB and recorded in the header so the decoder can
give back what the user would expect:

| input                               | colour coded as           | alpha      | decoded as     |
|-------------------------------------|---------------------------|------------|----------------|
| RGB                                 | RGB                       | -          | RGB            |
| L, 1 (grey)                         | grey replicated to RGB    | -          | L              |
| I;16*, I, F (16-bit, 32-bit grey)   | scaled to 8-bit grey (*)  | -          | L              |
| RGBA, RGBa, PA, RGB + transparency  | RGB                       | kept       | RGBA           |
| LA, La, L + transparency            | grey replicated to RGB    | kept       | LA             |
| P (palette)                         | RGB                       | -          | RGB            |
| P + transparency                    | RGB                       | kept       | RGBA           |
| 16-bit RGB / RGBA / LA (PNG, TIFF)  | 8-bit (*)                 | 8-bit (*)  | RGB / RGBA / LA|
| CMYK, YCbCr, LAB, HSV               | converted to RGB          | -          | RGB            |
| animated, multi-page                | the first frame (*)       | as above   | as above       |

(*) with a :class:`BbimgWarning` saying what was not kept (the command line prints it on stderr).
Every decoded image has 8 bits per sample. Premultiplied modes (RGBa, La) are unpremultiplied first.

Colour under fully transparent pixels (alpha 0) is invisible, so unless ``exact=True`` it is
replaced by a smooth extension of the visible colour, as cwebp does without ``-exact``: the model
spends far fewer bits on it than on whatever the source held there (often black, or a flat colour
with a hard edge at the shape's outline). On 24 RGBA images at q75 it cut the bytes of the colour
coding by 19% (453,362 -> 369,186) and raised the mean PSNR over visible pixels from 32.65 to
35.22 dB (``python bench/alpha.py --fill``, bench/results/alpha_fill.csv).

EXIF orientation is applied before coding (the decoded image is upright; its EXIF, if kept, says
orientation 1). The ICC profile is carried in the file and attached to the decoded image.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["PreparedImage", "BbimgWarning", "prepare", "restore", "source_bit_depth", "fill_transparent",
           "COLOUR_RGB", "COLOUR_GREY"]

COLOUR_RGB = "RGB"
COLOUR_GREY = "L"
_EXIF_ORIENTATION = 0x0112
_DEEP_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
#: Formats whose extra frames are not part of the picture (MPO: a camera's previews, depth maps).
_AUXILIARY_FRAMES = ("MPO",)


class BbimgWarning(UserWarning):
    """Something in the input was not kept as it was (deeper samples, later frames)."""


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray          # (H, W, 3) uint8 colour planes (grey replicated), alpha not applied
    colour: str                 # COLOUR_RGB or COLOUR_GREY: what decode gives back (plus alpha)
    bit_depth: int              # of the original samples (1..32); decoded images have 8
    icc_profile: bytes | None
    exif: bytes | None
    alpha: np.ndarray | None = None  # (H, W) uint8, None when the image has no alpha

    @property
    def had_alpha(self) -> bool:
        return self.alpha is not None


def _rawmodes(image: Image.Image) -> list[str]:
    """Pillow's raw modes of the not yet loaded tiles (they say e.g. 'RGB;16B' for 16-bit PNG)."""
    out = []
    for tile in getattr(image, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        if isinstance(raw, str):
            out.append(raw)
    return out


def source_bit_depth(image: Image.Image) -> int:
    """Bits per sample of the source, as far as Pillow still tells: its mode, the raw modes of the
    tiles not yet loaded, or a TIFF's BitsPerSample. Pillow gives 16-bit RGB(A) PNG and TIFF as
    8-bit modes, so for those this must be called before ``image.load()`` (``prepare`` does)."""
    mode = image.mode
    if mode == "F":
        return 32
    raws = _rawmodes(image)
    if mode.startswith("I;16") or any(";16" in r for r in raws):
        return 16
    if mode == "I":
        return 32 if not raws or any(";32" in r or r == "I" for r in raws) else 16
    depth = 1 if mode == "1" else 8
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        try:
            bits = tags.get(258)
            bits = max(bits) if isinstance(bits, tuple) else bits
            if isinstance(bits, int) and bits > depth:
                depth = bits
        except Exception:  # a malformed tag must not stop an encode
            pass
    return depth


def _grey_source(image: Image.Image) -> bool:
    """A 16-bit grey + alpha PNG opens as RGBA; its raw mode still says LA."""
    return any(r.startswith("LA") for r in _rawmodes(image))


def _first_frame(image: Image.Image) -> Image.Image:
    frames = getattr(image, "n_frames", 1)
    if isinstance(frames, int) and frames > 1 and image.format not in _AUXILIARY_FRAMES:
        warnings.warn(f"{frames} frames (animated or multi-page): only the first is coded", BbimgWarning,
                      stacklevel=3)
        if image.tell() != 0:
            image.seek(0)
    return image


def _deep_grey(image: Image.Image, depth: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W) 8-bit grey and alpha (from a tRNS grey value) of an I;16 / I / F image."""
    arr = np.asarray(image, dtype=np.float64)
    grey = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
    alpha = None
    key = image.info.get("transparency")
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        alpha = np.where(arr == key, 0, 255).astype(np.uint8)
    return grey, alpha


def _pool(a: np.ndarray) -> np.ndarray:
    """Sums over 2 x 2 blocks (an odd last row or column is padded with zeros)."""
    h, w = a.shape
    if h & 1 or w & 1:
        a = np.pad(a, ((0, h & 1), (0, w & 1)))
    return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).sum(axis=(1, 3))


def fill_transparent(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour with the pixels where alpha is 0 replaced by a smooth extension of
    the others (push-pull: means of the visible pixels over ever coarser 2 x 2 blocks, then
    bilinear interpolation back up, coarse values only where a block has no visible pixel)."""
    hole = alpha == 0
    if not hole.any():
        return pixels
    out = pixels.copy()
    if hole.all():
        out[:] = 0
        return out
    weights = [(~hole).astype(np.float32)]
    while weights[-1].shape != (1, 1):
        weights.append(_pool(weights[-1]))
    for k in range(3):
        sums = [pixels[:, :, k] * weights[0]]
        for _ in weights[1:]:
            sums.append(_pool(sums[-1]))
        fill = sums[-1] / weights[-1]
        for total, weight in zip(reversed(sums[:-1]), reversed(weights[:-1])):
            up = Image.fromarray(fill, "F").resize((2 * fill.shape[1], 2 * fill.shape[0]), Image.BILINEAR)
            up = np.asarray(up)[: total.shape[0], : total.shape[1]]
            fill = np.where(weight > 0, total / np.maximum(weight, 1e-30), up)
        out[:, :, k][hole] = np.clip(np.round(fill[hole]), 0, 255)
    return out


def prepare(image: Image.Image, *, exact: bool = False) -> PreparedImage:
    """Map any Pillow image to 8-bit RGB pixels, an alpha plane if it has one, and what the decoder
    needs to give it back. Warns (:class:`BbimgWarning`) for what it cannot keep. ``exact``: keep
    the colour under fully transparent pixels instead of filling it smoothly."""
    image = _first_frame(image)
    depth = source_bit_depth(image)
    grey_source = _grey_source(image)
    icc = image.info.get("icc_profile") or None
    exif_bytes = None
    try:  # a copy: the caller's image keeps its orientation tag
        exif = Image.Exif()
        if source_exif := image.getexif():
            exif.load(source_exif.tobytes())
    except Exception:  # malformed EXIF must not stop an encode
        exif = None
    from PIL import ImageOps  # encoding only: not imported by a decode

    image = ImageOps.exif_transpose(image) or image
    if exif:
        exif[_EXIF_ORIENTATION] = 1
        exif_bytes = exif.tobytes()
    if depth > 8:
        kind = "float" if image.mode == "F" else "bit"
        what = f"{depth}-bit float" if kind == "float" else f"{depth}-bit"
        warnings.warn(f"{what} samples coded at 8 bits", BbimgWarning, stacklevel=2)
    mode, alpha = image.mode, None
    transparent = "transparency" in image.info or (mode == "P" and image.has_transparency_data)
    if mode in _DEEP_GREY:
        grey, alpha = _deep_grey(image, depth)
        pixels, colour = np.repeat(grey[:, :, None], 3, axis=2), COLOUR_GREY
    else:
        if mode in ("LA", "La") or (mode in ("L", "1") and transparent) or (mode == "RGBA" and grey_source):
            la = np.asarray(image.convert("LA") if mode != "RGBA" else image.convert("RGBA").convert("LA"))
            grey, alpha, colour = la[:, :, 0], la[:, :, 1], COLOUR_GREY
            pixels = np.repeat(grey[:, :, None], 3, axis=2)
        elif mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and transparent):
            rgba = np.asarray(image.convert("RGBA"))
            pixels, alpha, colour = rgba[:, :, :3], rgba[:, :, 3], COLOUR_RGB
        elif mode in ("L", "1"):
            pixels, colour = np.asarray(image.convert("L").convert("RGB")), COLOUR_GREY
        else:  # (an RGB image as it is: convert would copy it first)
            pixels, colour = np.asarray(image if image.mode == "RGB" else image.convert("RGB")), COLOUR_RGB
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha, dtype=np.uint8)
        if not exact:
            pixels = fill_transparent(np.asarray(pixels, dtype=np.uint8), alpha)
    return PreparedImage(np.ascontiguousarray(pixels, dtype=np.uint8), colour, depth, icc, exif_bytes, alpha)


def restore(pixels: np.ndarray, colour: str, icc_profile: bytes | None = None, exif: bytes | None = None,
            alpha: np.ndarray | None = None) -> Image.Image:
    """Decoded (H, W, 3) uint8 pixels (and the (H, W) alpha plane, if any) -> the Pillow image the
    user gets: RGB, L, RGBA or LA."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
    if colour == COLOUR_GREY:
        image = image.convert("L")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.dtype != np.uint8 or alpha.shape != (image.height, image.width):
            raise ValueError(f"alpha must be a ({image.height}, {image.width}) uint8 plane, "
                             f"got {alpha.dtype} {alpha.shape}")
        image.putalpha(Image.fromarray(np.ascontiguousarray(alpha), "L"))
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    if exif:
        image.info["exif"] = exif
    return image
