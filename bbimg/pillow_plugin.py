"""Pillow plugin: ``Image.open("x.bbi")`` and ``im.save("x.bbi", quality=...)`` after ``import bbimg``."""
from __future__ import annotations

import io

from PIL import Image, ImageFile

from .format import BbiError, check, decoded_description, read_info
from .model_files import find_by_hash

__all__ = ["BbiImageFile"]

FORMAT = "BBI"


def _accept(prefix: bytes) -> bool:
    return bool(check(prefix))


class BbiImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "bbimg learned image codec"

    def _open(self) -> None:
        data = self.fp.read()
        if not check(data[:16]):
            raise SyntaxError("not a bbimg file")
        try:
            meta = read_info(data)
            described = decoded_description(meta.header, meta.sections)
        except BbiError as exc:
            raise SyntaxError(str(exc)) from exc
        header = meta.header
        self._data = data
        self._size = (header.width, header.height)
        self._mode = described["mode"]
        self.info["bbi_quality"] = header.quality_q
        name = header.model_name if header.model_name is not None else find_by_hash(header.weights_hash)
        self.info["bbi_model"] = header.weights_hash.hex() if name is None else name
        self.tile = []

    def load(self):
        if self._data is not None:
            from .codec import decode
            try:
                decoded = decode(self._data)
            except BbiError as exc:
                raise OSError(f"cannot decode bbimg file: {exc}") from exc
            self.im = decoded.im
            self._mode = decoded.mode
            self.info.update(decoded.info)
            self._data = None
            self.readonly = False
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename) -> None:
    from .codec import DEFAULT_QUALITY, encode
    options = im.encoderinfo
    quality = options.get("quality", DEFAULT_QUALITY)
    if not isinstance(quality, (int, float)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be a number in 1..100, got {quality!r}")
    kwargs = {k: options[k] for k in ("bpp", "seed", "model", "device", "effort", "exact") if k in options}
    try:
        data = encode(im, quality, **kwargs)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's contract: failures are OSError
        raise OSError(f"bbimg encode failed: {exc}") from exc
    fp.write(data)


Image.register_open(FORMAT, BbiImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".bbi")
Image.register_mime(FORMAT, "image/x-bbi")
del io
