"""Rate-distortion of bbimg on a set of images: encode and decode each through the public codec.

    from bbimg.evaluate import evaluate
    rows = evaluate(["a.png", "b.png"], [50, 75])     # one dict per image and quality

bpp counts the real .bbi bytes (headers included) over the image's pixels; PSNR is over all
channels of the 8-bit decoded image (peak 255); MS-SSIM is pytorch-msssim's linear MS-SSIM
averaged over channels. pytorch-msssim is optional (``pip install bbimg[bench]``): without it, or
for images under 161 pixels on a side (too small for its five scales), ms_ssim is NaN and
:func:`ms_ssim_note` says why.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

__all__ = ["evaluate", "psnr", "ms_ssim", "ms_ssim_note", "image_files", "mean_rows", "CSV_COLUMNS",
           "MS_SSIM_MIN_SIDE"]

CSV_COLUMNS = ("codec", "param", "image", "bpp", "psnr", "ms_ssim")
MS_SSIM_MIN_SIDE = 161  # pytorch-msssim, 5 scales, 11-pixel window: side > (11 - 1) * 2 ** 4

# (done, total, label): called after each image and quality.
Progress = Callable[[int, int, str], None]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of the same shape (peak 255); inf when they are equal."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ms_ssim_note() -> str | None:
    """Why MS-SSIM cannot be computed here (None when pytorch-msssim is importable)."""
    try:
        import pytorch_msssim  # noqa: F401
    except ImportError:
        return "MS-SSIM needs pytorch-msssim (pip install pytorch-msssim); reported as NaN"
    return None


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Linear MS-SSIM of two uint8 (H, W[, C]) arrays; NaN without pytorch-msssim or below 161 px a side."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE or ms_ssim_note() is not None:
        return float("nan")
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def as_tensor(x: np.ndarray):
        x = x if x.ndim == 3 else x[:, :, None]
        return torch.from_numpy(np.array(x, dtype=np.float32)).permute(2, 0, 1)[None]

    return float(_ms_ssim(as_tensor(a), as_tensor(b), data_range=255.0))


def image_files(folder: str | Path) -> list[Path]:
    """The files directly in ``folder`` that Pillow can read by extension (not .bbi), sorted by name."""
    exts = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and fmt != "BBI"}
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in exts
                  and not p.name.startswith("."))


def evaluate(paths: Iterable[str | Path], qualities: Iterable[int], model: str | None = None,
             progress: Progress | None = None, device: str = "cpu") -> list[dict]:
    """Encode and decode every image at every quality; one dict per (image, quality).

    Keys: codec ("bbimg"), param (the quality), image (file stem), bpp, psnr, ms_ssim, and
    bytes, width, height, encode_s, decode_s. An unreadable image raises ValueError naming it.
    """
    from .codec import decode, encode
    from .model_files import DEFAULT_MODEL

    paths, qualities = [Path(p) for p in paths], [int(q) for q in qualities]
    for q in qualities:
        if not 1 <= q <= 100:
            raise ValueError(f"quality must be in 1..100, got {q}")
    model = model or DEFAULT_MODEL
    rows: list[dict] = []
    total = len(paths) * len(qualities)
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        for q in qualities:
            start = time.perf_counter()
            try:
                data = encode(image, q, model=model, device=device)
            except (OSError, SyntaxError) as exc:
                raise ValueError(f"cannot encode {path}: {exc}") from exc
            mid = time.perf_counter()
            out = decode(data, device=device)
            end = time.perf_counter()
            rec = np.asarray(out)
            ref = np.asarray(image.convert(out.mode))
            rows.append(dict(codec="bbimg", param=q, image=path.stem,
                             bpp=len(data) * 8 / (out.width * out.height), psnr=psnr(ref, rec),
                             ms_ssim=ms_ssim(ref, rec), bytes=len(data), width=out.width, height=out.height,
                             encode_s=mid - start, decode_s=end - mid))
            if progress is not None:
                progress(len(rows), total, f"{path.name} q={q}")
    return rows


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per quality: the mean bpp, psnr and ms_ssim over images (NaN-aware for ms_ssim)."""
    out = []
    for q in sorted({r["param"] for r in rows}):
        rs = [r for r in rows if r["param"] == q]
        ms = [r["ms_ssim"] for r in rs if not math.isnan(r["ms_ssim"])]
        out.append(dict(codec=rs[0]["codec"], param=q, image="(mean)", bpp=float(np.mean([r["bpp"] for r in rs])),
                        psnr=float(np.mean([r["psnr"] for r in rs])),
                        ms_ssim=float(np.mean(ms)) if len(ms) == len(rs) else float("nan")))
    return out

