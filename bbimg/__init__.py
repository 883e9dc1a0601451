"""bbimg: learned lossy image compression without quantization.

A Gaussian VAE gives posteriors over its latents; relative entropy coding sends a sample of them
(encoder and decoder draw the same candidates from the prior; the file holds indices).

    import bbimg
    data = bbimg.encode("in.png", quality=75)    # a path, file, PIL image or uint8 array
    image = bbimg.decode(data)                     # bytes, a path or a file -> PIL image

Importing bbimg also registers the ``.bbi`` format with Pillow. The codec's modules (and ONNX
Runtime) are imported on first use.
"""
from __future__ import annotations

from typing import Any

from .format import BbiError, check

__all__ = ["encode", "decode", "info", "check", "version", "BbiError", "ImageTooLargeError", "__version__"]


def version() -> str:
    """The installed package's version (read from its metadata on first use: importlib.metadata
    costs ~10 ms of imports that encoding and decoding do not need)."""
    global __version__
    if "__version__" not in globals():
        from importlib import metadata
        try:
            __version__ = metadata.version("bbimg")
        except metadata.PackageNotFoundError:  # running from a source tree that was never installed
            __version__ = "0+unknown"
    return __version__


def encode(image: Any, /, **options: Any) -> bytes:
    """Image (path, binary file, PIL image, uint8 array or encoded image bytes) -> .bbi bytes.
    Options (quality, bpp, ...) as in :func:`bbimg.codec.encode`."""
    from .codec import encode as _encode
    return _encode(image, **options)


def decode(data: Any, /, **options: Any):
    """.bbi data (bytes, path or binary file) -> PIL.Image.Image. Corrupt data raises BbiError;
    files above the decode pixel limit raise ImageTooLargeError. See :func:`bbimg.codec.decode`."""
    from .codec import decode as _decode
    return _decode(data, **options)


def info(data: Any, /) -> dict:
    """Header facts of .bbi data (size, bpp, model, quality, sections) without decoding pixels."""
    from .codec import info as _info
    return _info(data)


def __getattr__(name: str):
    if name == "__version__":
        return version()
    if name == "ImageTooLargeError":  # lazily: the codec module imports ONNX Runtime
        from .codec import ImageTooLargeError
        return ImageTooLargeError
    raise AttributeError(f"module 'bbimg' has no attribute {name!r}")


from . import pillow_plugin as _pillow_plugin  # noqa: E402,F401  (registers .bbi with Pillow)
