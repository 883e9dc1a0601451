"""Shared helpers for the benchmark scripts: Kodak loading, metrics, BD-rate, CSV output."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["KODAK", "ANCHORS", "kodak_images", "psnr", "ms_ssim", "bd_rate", "write_csv", "pillow_codec",
           "average_curve", "RESULTS"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared"
KODAK = SHARED / "data" / "kodak"
ANCHORS = SHARED / "anchors" / "kodak_rd_published.csv"


def kodak_images(limit: int | None = None, folder: Path = KODAK) -> list[tuple[str, np.ndarray]]:
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        raise SystemExit(f"no Kodak images found in {folder}")
    return [(f.stem, np.asarray(Image.open(f).convert("RGB"))) for f in files]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].double()
    tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].double()
    return float(_ms_ssim(ta, tb, data_range=255.0))


def pillow_codec(image: np.ndarray, fmt: str, quality: int) -> tuple[int, np.ndarray]:
    """Encode with Pillow, return (bytes, decoded RGB)."""
    buf = io.BytesIO()
    options = {"quality": quality}
    if fmt == "WEBP":
        options["method"] = 6
    if fmt == "JPEG":
        options["subsampling"] = 2 if quality < 90 else 0
    Image.fromarray(image).save(buf, format=fmt, **options)
    data = buf.getvalue()
    return len(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def average_curve(rows: list[dict], codec: str, metric: str = "psnr") -> tuple[np.ndarray, np.ndarray]:
    """Mean bpp and metric per param over images, sorted by rate."""
    by_param: dict[str, list[dict]] = {}
    for r in rows:
        if r["codec"] == codec:
            by_param.setdefault(str(r["param"]), []).append(r)
    pts = sorted((np.mean([float(r["bpp"]) for r in rs]), np.mean([float(r[metric]) for r in rs]))
                 for rs in by_param.values())
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def bd_rate(rate_ref, dist_ref, rate_test, dist_test) -> float:
    """Bjøntegaard delta rate (%) of test against ref: cubic fit of log-rate over distortion,
    integrated over the overlapping distortion interval. Negative = test needs fewer bits."""
    rate_ref, dist_ref = np.asarray(rate_ref, float), np.asarray(dist_ref, float)
    rate_test, dist_test = np.asarray(rate_test, float), np.asarray(dist_test, float)
    lo = max(dist_ref.min(), dist_test.min())
    hi = min(dist_ref.max(), dist_test.max())
    if hi <= lo or len(rate_ref) < 4 or len(rate_test) < 4:
        return float("nan")
    p_ref = np.polyfit(dist_ref, np.log(rate_ref), 3)
    p_test = np.polyfit(dist_test, np.log(rate_test), 3)
    int_ref = np.polyval(np.polyint(p_ref), hi) - np.polyval(np.polyint(p_ref), lo)
    int_test = np.polyval(np.polyint(p_test), hi) - np.polyval(np.polyint(p_test), lo)
    return float((np.exp((int_test - int_ref) / (hi - lo)) - 1) * 100)
