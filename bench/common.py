"""Shared helpers for the benchmark scripts: Kodak loading, metrics, BD-rate, CSV output, and the
reference codecs (JPEG, WebP, JPEG 2000, AVIF 4:4:4 / 4:2:0, JPEG XL) run in the same process."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from bbimg.evaluate import ms_ssim, psnr

__all__ = ["cpu_name", "isa", "KODAK", "ANCHORS", "kodak_images", "kodak_files", "psnr", "ms_ssim", "bd_rate", "write_csv",
           "pillow_codec", "average_curve", "RESULTS", "Codec", "reference_codecs", "read_anchors",
           "local_points"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared"
KODAK = SHARED / "data" / "kodak"
ANCHORS = SHARED / "anchors" / "kodak_rd_published.csv"


def isa() -> str:
    """The widest vector extensions of this CPU that ONNX Runtime's and torch's kernels can use."""
    import re
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        return "unknown"
    parts = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if f in flags]
    if not parts:
        parts = [f for f in ("avx2", "fma", "avx_vnni") if f in flags] or ["sse"]
    return "+".join(parts)


def cpu_name() -> str:
    """The CPU's model name and its widest vector unit, e.g. 'AMD EPYC (AVX2)': speed figures
    name the machine they were measured on."""
    import platform
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = isa()
    return f"{name} ({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'SSE'})"


def kodak_files(limit: int | None = None, folder: Path = KODAK) -> list[Path]:
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        raise SystemExit(f"no Kodak images found in {folder}")
    return files


def kodak_images(limit: int | None = None, folder: Path = KODAK) -> list[tuple[str, np.ndarray]]:
    return [(f.stem, np.asarray(Image.open(f).convert("RGB"))) for f in kodak_files(limit, folder)]


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


def write_csv(rows: list[dict], path: Path, columns: list[str] | tuple[str, ...] | None = None) -> None:
    """Rows to CSV; ``columns`` picks and orders the fields (others are dropped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns or rows[0]), extrasaction="ignore")
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


def bd_rate(rate_ref, dist_ref, rate_test, dist_test, dist_range: tuple[float, float] | None = None) -> float:
    """Bjøntegaard delta rate (%) of test against ref: cubic fit of log-rate over distortion,
    integrated over the overlapping distortion interval (narrowed to ``dist_range`` when given).
    Negative = test needs fewer bits."""
    rate_ref, dist_ref = np.asarray(rate_ref, float), np.asarray(dist_ref, float)
    rate_test, dist_test = np.asarray(rate_test, float), np.asarray(dist_test, float)
    lo = max(dist_ref.min(), dist_test.min())
    hi = min(dist_ref.max(), dist_test.max())
    if dist_range is not None:
        lo, hi = max(lo, dist_range[0]), min(hi, dist_range[1])
    if hi <= lo or len(rate_ref) < 4 or len(rate_test) < 4:
        return float("nan")
    p_ref = np.polyfit(dist_ref, np.log(rate_ref), 3)
    p_test = np.polyfit(dist_test, np.log(rate_test), 3)
    int_ref = np.polyval(np.polyint(p_ref), hi) - np.polyval(np.polyint(p_ref), lo)
    int_test = np.polyval(np.polyint(p_test), hi) - np.polyval(np.polyint(p_test), lo)
    return float((np.exp((int_test - int_ref) / (hi - lo)) - 1) * 100)


def quality_at_rates(rate, dist, bpp_lo: float, bpp_hi: float) -> tuple[float, float]:
    """The distortion interval a curve spans between two rates (linear in log-rate between its
    points, clamped to its ends): how a BD-rate "over 0.1-1 bpp" is restricted to the quality range
    the tested curve gives at those rates."""
    order = np.argsort(rate)
    log_rate, dist = np.log(np.asarray(rate, float)[order]), np.asarray(dist, float)[order]
    return (float(np.interp(np.log(bpp_lo), log_rate, dist)), float(np.interp(np.log(bpp_hi), log_rate, dist)))


def local_points(rate, dist, lo: float, hi: float, keep: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The points of a curve (sorted by distortion) that cover the distortion interval [lo, hi],
    plus one neighbour on each side, at least ``keep`` of them: a published curve spanning
    0.05-5 bpp is then fitted only where it is compared, not over its whole range."""
    order = np.argsort(dist)
    rate, dist = np.asarray(rate, float)[order], np.asarray(dist, float)[order]
    first = max(int(np.searchsorted(dist, lo, side="right")) - 2, 0)
    last = min(int(np.searchsorted(dist, hi, side="left")) + 2, len(dist))
    while last - first < keep and (first > 0 or last < len(dist)):
        if first > 0:
            first -= 1
        if last - first < keep and last < len(dist):
            last += 1
    return rate[first:last], dist[first:last]


def read_anchors(path: Path = ANCHORS) -> dict[str, list[dict]]:
    """Published Kodak curves: codec -> rows with float bpp, psnr, ms_ssim (NaN when not given)."""
    out: dict[str, list[dict]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["codec"], []).append(
                dict(bpp=float(r["bpp"]), psnr=float(r["psnr"]),
                     ms_ssim=float(r["ms_ssim"]) if r["ms_ssim"] else float("nan"), source=r["source_path"]))
    return out


# ----------------------------------------------------------------------------------------------
# Reference codecs. Parameter sweeps are ordered from low to high rate and chosen to cover about
# 0.05-1.5 bpp on Kodak (JPEG cannot go below about 0.15 bpp).


@dataclass(frozen=True)
class Codec:
    name: str
    params: tuple                              # rate-distortion sweep, low rate first
    speed_param: Any                           # the one operating point bench/speed.py times
    encode: Callable[[np.ndarray, Any], bytes]  # uint8 RGB (H, W, 3) -> file bytes
    decode: Callable[[bytes], np.ndarray]       # file bytes -> uint8 RGB (H, W, 3)
    library: str

    def roundtrip(self, image: np.ndarray, param) -> tuple[int, np.ndarray]:
        data = self.encode(image, param)
        return len(data), self.decode(data)


def _pillow_encode(fmt: str, **fixed) -> Callable[[np.ndarray, Any], bytes]:
    def encode(image: np.ndarray, param) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, **fixed, **_PARAM_OPTIONS[fmt](param))
        return buf.getvalue()
    return encode


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


_PARAM_OPTIONS: dict[str, Callable[[Any], dict]] = {
    # 4:2:0 below quality 90 and 4:4:4 from 90, as pillow_codec does
    "JPEG": lambda q: dict(quality=int(q), subsampling=2 if q < 90 else 0),
    "WEBP": lambda q: dict(quality=int(q)),
    # param = target bpp on 24-bit RGB: compression ratio 24 / bpp
    "JPEG2000": lambda bpp: dict(quality_mode="rates", quality_layers=[24.0 / float(bpp)]),
    "AVIF": lambda q: dict(quality=int(q)),
}


def reference_codecs(only: set[str] | None = None) -> tuple[list[Codec], list[str]]:
    """(the reference codecs that can run here, one note per codec that cannot and why)."""
    import PIL
    from PIL import features

    codecs: list[Codec] = []
    notes: list[str] = []
    pil = f"Pillow {PIL.__version__}"
    try:
        import imagecodecs
    except ImportError:
        imagecodecs = None

    if features.check("jpg"):
        if features.check("libjpeg_turbo"):
            lib = f"libjpeg-turbo {features.version('libjpeg_turbo')}"
        else:
            lib = f"libjpeg {features.version('jpg')}"
        codecs.append(Codec("jpeg", (5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 92), 50, _pillow_encode("JPEG"),
                            _pillow_decode, f"{pil} {lib}"))
    else:
        notes.append("jpeg: Pillow was built without libjpeg; skipped")
    if features.check("webp"):
        codecs.append(Codec("webp", (0, 5, 10, 20, 30, 45, 60, 75, 85, 90, 95), 75, _pillow_encode("WEBP", method=6),
                            _pillow_decode, f"{pil} libwebp {features.version('webp')}, method 6"))
    else:
        notes.append("webp: Pillow was built without libwebp; skipped")
    if features.check("jpg_2000"):
        codecs.append(Codec("jpeg2000", (0.05, 0.1, 0.2, 0.3, 0.45, 0.65, 0.9, 1.2, 1.6, 2.2, 3.0), 0.75,
                            _pillow_encode("JPEG2000", irreversible=True, mct=1, no_jp2=True), _pillow_decode,
                            f"{pil} OpenJPEG {features.version('jpg_2000')}, 9/7 + ICT, rate = param bpp"))
    else:
        notes.append("jpeg2000: Pillow was built without OpenJPEG; skipped")
    avif_q = (2, 10, 20, 30, 38, 46, 54, 62, 70, 78, 86, 92)
    for sub, name in (("4:4:4", "avif-444"), ("4:2:0", "avif-420")):
        if features.check("avif"):
            codecs.append(Codec(name, avif_q, 60, _pillow_encode("AVIF", subsampling=sub, speed=6), _pillow_decode,
                                f"{pil} libavif {features.version('avif')}, {sub}, speed 6"))
        elif imagecodecs is not None and imagecodecs.AVIF.available:
            fmt = imagecodecs.AVIF.PIXEL_FORMAT.YUV444 if sub == "4:4:4" else imagecodecs.AVIF.PIXEL_FORMAT.YUV420
            codecs.append(Codec(name, avif_q, 60,
                                lambda im, q, fmt=fmt: imagecodecs.avif_encode(im, level=int(q), speed=6,
                                                                               pixelformat=fmt),
                                lambda d: np.asarray(imagecodecs.avif_decode(d))[..., :3],
                                f"imagecodecs {imagecodecs.__version__} avif, {sub}, speed 6"))
        else:
            notes.append(f"{name}: neither Pillow (>= 11, with libavif) nor imagecodecs can write AVIF; skipped")
    if imagecodecs is not None and imagecodecs.JPEGXL.available:
        codecs.append(Codec("jpegxl", (18.0, 13.0, 9.0, 6.5, 4.5, 3.2, 2.3, 1.6, 1.1, 0.8, 0.6, 0.45), 3.2,
                            lambda im, d: imagecodecs.jpegxl_encode(im, distance=float(d), effort=7),
                            lambda d: np.asarray(imagecodecs.jpegxl_decode(d))[..., :3],
                            f"imagecodecs {imagecodecs.__version__} libjxl, effort 7, param = distance"))
    else:
        notes.append("jpegxl: needs imagecodecs with libjxl (pip install imagecodecs); skipped")
    if only is not None:
        codecs = [c for c in codecs if c.name in only]
    return codecs, notes
