"""What bbimg does with the many kinds of input image Pillow can open, and how it gives them back.

The model codes 8-bit RGB. Everything else is mapped to it and recorded in the header so the
decoder can give back what the user would expect:

| input                         | coded as                 | decoded as                  |
|-------------------------------|--------------------------|-----------------------------|
| RGB (8-bit)                   | RGB                      | RGB                         |
| L, 1 (grey)                   | grey replicated to RGB   | L                           |
| I;16*, I, F (16-bit/float grey)| scaled to 8-bit grey     | L (8-bit)                   |
| P (palette)                   | RGB (or RGBA rule below) | RGB                         |
| RGBA, LA, PA, P+transparency  | alpha composited on white| RGB, or L for LA            |
| CMYK, YCbCr, LAB, HSV         | converted to RGB         | RGB                         |

EXIF orientation is applied before coding (the decoded image is upright; its EXIF, if kept, says
orientation 1). The ICC profile is carried in the file and attached to the decoded image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

__all__ = ["PreparedImage", "prepare", "restore", "COLOUR_RGB", "COLOUR_GREY"]

COLOUR_RGB = "RGB"
COLOUR_GREY = "L"
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray          # (H, W, 3) uint8
    colour: str                 # COLOUR_RGB or COLOUR_GREY: what decode gives back
    bit_depth: int              # of the original samples (8 or 16)
    had_alpha: bool             # alpha was composited onto white
    icc_profile: bytes | None
    exif: bytes | None


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def prepare(image: Image.Image) -> PreparedImage:
    """Map any Pillow image to 8-bit RGB pixels plus what the decoder needs to give it back."""
    icc = image.info.get("icc_profile") or None
    exif_bytes = None
    try:
        exif = image.getexif()
    except Exception:  # malformed EXIF must not stop an encode
        exif = None
    image = ImageOps.exif_transpose(image) or image
    if exif:
        exif[_EXIF_ORIENTATION] = 1
        exif_bytes = exif.tobytes()
    mode = image.mode
    bit_depth, had_alpha, colour = 8, False, COLOUR_RGB
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        bit_depth = 16 if mode.startswith("I") else 32
        rgb = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        pixels = np.repeat(rgb[:, :, None], 3, axis=2)
        colour = COLOUR_GREY
    else:
        if mode == "P":
            has_transparency = "transparency" in image.info
            image = image.convert("RGBA" if has_transparency else "RGB")
            mode = image.mode
        if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            had_alpha = True
            colour = COLOUR_GREY if mode in ("LA", "La") else COLOUR_RGB
            image = _flatten_alpha(image)
        elif mode in ("L", "1"):
            colour = COLOUR_GREY
            image = image.convert("L").convert("RGB")
        elif mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    return PreparedImage(np.ascontiguousarray(pixels), colour, bit_depth, had_alpha, icc, exif_bytes)


def restore(pixels: np.ndarray, colour: str, icc_profile: bytes | None = None,
            exif: bytes | None = None) -> Image.Image:
    """Decoded (H, W, 3) uint8 pixels -> the Pillow image the user gets."""
    image = Image.fromarray(pixels, "RGB")
    if colour == COLOUR_GREY:
        image = image.convert("L")
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    if exif:
        image.info["exif"] = exif
    return image
