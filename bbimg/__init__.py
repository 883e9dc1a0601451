"""bbimg: learned lossy image compression without quantization.

A Gaussian VAE gives posteriors over its latents; relative entropy coding sends a sample of them
(encoder and decoder draw the same candidates from the prior; the file holds indices).

    import bbimg
    data = bbimg.encode(Image.open("in.png"), quality=75)
    image = bbimg.decode(data)

Importing bbimg also registers the ``.bbi`` format with Pillow. torch is imported on first use.
"""
from __future__ import annotations

from typing import Any

from .format import BbiError, check

__version__ = "0.1.0"
__all__ = ["encode", "decode", "info", "check", "version", "BbiError", "__version__"]


def version() -> str:
    return __version__


def encode(image: Any, /, *, quality: float = 75, **options: Any) -> bytes:
    """Image (PIL image, uint8 array or encoded image bytes) -> .bbi bytes. See bbimg.codec.encode."""
    from .codec import encode as _encode
    return _encode(image, quality, **options)


def decode(data: bytes, /, **options: Any):
    """.bbi bytes -> PIL.Image.Image (RGB or L). Corrupt data raises BbiError."""
    from .codec import decode as _decode
    return _decode(data, **options)


def info(data: bytes, /) -> dict:
    """Header facts of .bbi bytes (size, bpp, model, quality, sections) without decoding pixels."""
    from .codec import info as _info
    return _info(data)


from . import pillow_plugin as _pillow_plugin  # noqa: E402,F401  (registers .bbi with Pillow)
