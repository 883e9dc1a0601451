"""Bytes of lossless alpha coders on real RGBA images: what chose bbimg's ALPH coder (bbimg/alpha.py).

    nice python bench/alpha.py            # -> bench/results/alpha.csv (about a minute on 2 cores)
    nice python bench/alpha.py --fill     # -> bench/results/alpha_fill.csv (a few minutes)

Images: RGBA / P-with-transparency files that ship with common software on a Linux machine (icons,
logos, documentation figures; listed in ``REAL``, missing ones are skipped and named on stderr),
plus three masks made for Kodak images (``SYNTHETIC``): a soft vignette, a hard cut-out (a
thresholded, smoothed luminance) and the same cut-out feathered as a matting tool would give.

Coders, each given the (H, W) uint8 alpha plane:

* ``png``: the zlib stream of a PNG of the plane (Pillow, ``optimize=True``: zlib level 9 and
  adaptive per-row filters), without the PNG chunks around it.
* ``zlib``: zlib level 9 of the raw plane, no filter (a floor for what any container gives).
* ``webp-ll-m4`` / ``webp-ll-m6``: WebP lossless (Pillow / libwebp, quality 100, method 4 / 6)
  of the plane, the VP8L bitstream without the 20-byte RIFF wrapping.
* ``webp-alph``: the reference: how WebP itself stores alpha. The ALPH chunk payload of a lossy
  WebP of the RGBA image written with ``alpha_quality=100`` (lossless alpha, libwebp's default
  filter and method 6), i.e. what ``cwebp -q 75 -alpha_q 100 -m 6`` spends on alpha.
* ``bbimg``: the ALPH section payload bbimg writes (``bbimg.alpha.encode_alpha``), coder id byte
  included.

Columns: image, width, height, coder, bytes, bpp (bits per pixel of the plane), encode_ms,
decode_ms (-1 where the coder has no standalone decoder here).

``--fill`` measures instead what filling the colour under fully transparent pixels saves
(``bbimg.image.fill_transparent``, which ``prepare`` applies unless ``exact=True``): each image's
colour planes, as the source holds them (``exact``) and filled (``fill``), coded by bbimg at
``--quality`` (75) with the default model; bytes of the colour coding alone (the ALPH section
would be the same for both), and PSNR over the visible pixels (alpha > 0) of the decoded colour
against the source's. Columns: image, width, height, transparent (share of alpha-0 pixels), colour
(exact / fill), bytes, bpp, visible_psnr.
"""
from __future__ import annotations

import io
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bbimg import alpha as bbimg_alpha  # noqa: E402

RESULTS = ROOT / "bench" / "results"
KODAK = ROOT.parent / "shared" / "data" / "kodak"

_PY = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages"
_RUST = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html"
_ADW = "/usr/share/icons/Adwaita"
REAL = [
    f"{_PY}/matplotlib/mpl-data/images/matplotlib_large.png",
    "/root/.pyenv/versions/3.13.0/lib/python3.13/idlelib/Icons/idle_48.png",
    f"{_ADW}/64x64/legacy/web-browser-symbolic.symbolic.png",
    "/usr/share/doc/libpng-dev/examples/pngtest.png",
    "/usr/lib/google-cloud-sdk/platform/google_appengine/google/appengine/tools/devappserver2/admin/assets/"
    "google_logo_41.png",
    f"{_ADW}/96x96/status/weather-fog-symbolic.symbolic.png",
    "/usr/share/cmake-3.25/Templates/Windows/ApplicationIcon.png",
    f"{_PY}/matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png",
    "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/requests/ext/kr.png",
    f"{_RUST}/rustdoc/favicon-8114d1fc.png",
    "/usr/share/doc/nodejs/osx_installer_logo.png",
    "/root/.pyenv/versions/3.13.0/lib/python3.13/idlelib/Icons/idle_256.png",
    f"{_ADW}/256x256/mimetypes/x-package-repository.png",
    f"{_PY}/matplotlib/mpl-data/sample_data/logo2.png",
    f"{_RUST}/cargo/images/Cargo-Logo-Small.png",
    "/usr/share/doc/python3-pip/html/topics/deps.png",
    f"{_ADW}/512x512/devices/audio-headphones.png",
    f"{_ADW}/512x512/status/avatar-default.png",
    "/usr/lib/node_modules/npm/node_modules/qrcode-terminal/example/basic.png",
    "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/requests/docs/_static/requests-sidebar.png",
    "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/requests/ext/ss-compressed.png",
]
SYNTHETIC = {"vignette": "kodim05", "cutout-hard": "kodim23", "cutout-feathered": "kodim23"}
COLUMNS = ["image", "width", "height", "coder", "bytes", "bpp", "encode_ms", "decode_ms"]


def synthetic_mask(kind: str, rgb: np.ndarray) -> np.ndarray:
    """An alpha plane for a Kodak image: vignette, hard or feathered cut-out."""
    h, w = rgb.shape[:2]
    if kind == "vignette":
        y, x = np.mgrid[0:h, 0:w]
        r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
        return np.clip(np.round(255 * (1.4 - r) / 0.6), 0, 255).astype(np.uint8)
    grey = Image.fromarray(rgb).convert("L").filter(ImageFilter.GaussianBlur(3))
    hard = Image.fromarray(np.where(np.asarray(grey) > 110, 255, 0).astype(np.uint8))
    if kind == "cutout-hard":
        return np.asarray(hard)
    return np.asarray(hard.filter(ImageFilter.GaussianBlur(2)))


def _chunks(data: bytes, start: int, fmt: str):
    pos = start
    while pos < len(data):
        if fmt == "png":
            n, tag = struct.unpack(">I4s", data[pos:pos + 8])
            yield tag, data[pos + 8:pos + 8 + n]
            pos += 12 + n
        else:
            tag, n = struct.unpack("<4sI", data[pos:pos + 8])
            yield tag, data[pos + 8:pos + 8 + n]
            pos += 8 + n + (n & 1)


def png_stream(plane: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(plane, "L").save(buf, "PNG", optimize=True)
    return b"".join(body for tag, body in _chunks(buf.getvalue(), 8, "png") if tag == b"IDAT")


def webp_lossless(plane: np.ndarray, method: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(plane, "L").save(buf, "WEBP", lossless=True, quality=100, method=method, exact=True)
    return b"".join(body for tag, body in _chunks(buf.getvalue(), 12, "webp") if tag == b"VP8L")


def webp_alph(rgba: Image.Image) -> bytes:
    buf = io.BytesIO()
    rgba.save(buf, "WEBP", quality=75, method=6, alpha_quality=100)
    return b"".join(body for tag, body in _chunks(buf.getvalue(), 12, "webp") if tag == b"ALPH")


def _timed(fn, *args) -> tuple[bytes, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - start) * 1000


def measure(name: str, rgba: Image.Image) -> list[dict]:
    plane = np.asarray(rgba.getchannel("A"))
    h, w = plane.shape
    coders = {
        "png": lambda: png_stream(plane),
        "zlib": lambda: zlib.compress(plane.tobytes(), 9),
        "webp-ll-m4": lambda: webp_lossless(plane, 4),
        "webp-ll-m6": lambda: webp_lossless(plane, 6),
        "webp-alph": lambda: webp_alph(rgba),
        "bbimg": lambda: bbimg_alpha.encode_alpha(plane),
    }
    rows = []
    for coder, fn in coders.items():
        data, enc_ms = _timed(fn)
        dec_ms = -1.0
        if coder == "bbimg":
            out, dec_ms = _timed(bbimg_alpha.decode_alpha, data, w, h)
            assert np.array_equal(out, plane), name
        rows.append(dict(image=name, width=w, height=h, coder=coder, bytes=len(data),
                         bpp=round(8 * len(data) / (w * h), 4), encode_ms=round(enc_ms, 1),
                         decode_ms=round(dec_ms, 1)))
    return rows


def images() -> list[tuple[str, Image.Image]]:
    out = []
    for path in map(Path, REAL):
        if not path.exists():
            print(f"skipped (not on this machine): {path}", file=sys.stderr)
            continue
        with Image.open(path) as im:
            out.append((path.name, im.convert("RGBA")))
    for kind, stem in SYNTHETIC.items():
        rgb = np.asarray(Image.open(KODAK / f"{stem}.png").convert("RGB"))
        out.append((f"{stem}-{kind}", Image.fromarray(np.dstack([rgb, synthetic_mask(kind, rgb)]), "RGBA")))
    return out


def fill_rows(quality: int) -> list[dict]:
    from bbimg import codec
    from bbimg.image import prepare

    rows = []
    for name, rgba in images():
        exact = prepare(rgba, exact=True)  # upright (EXIF orientation applied) colour and alpha
        alpha, source = exact.alpha, exact.pixels.astype(np.float64)
        visible = alpha > 0
        for kind in ("exact", "fill"):
            pixels = prepare(rgba, exact=kind == "exact").pixels
            data = codec.encode(Image.fromarray(pixels, "RGB"), quality)
            decoded = np.asarray(codec.decode(data).convert("RGB"), np.float64)
            mse = ((decoded - source) ** 2)[visible].mean()
            rows.append(dict(image=name, width=rgba.width, height=rgba.height,
                             transparent=round(float((alpha == 0).mean()), 3), colour=kind, bytes=len(data),
                             bpp=round(8 * len(data) / alpha.size, 4),
                             visible_psnr=round(10 * np.log10(255**2 / mse), 2) if mse else 99.0))
            print(rows[-1], file=sys.stderr)
    for kind in ("exact", "fill"):
        mine = [r for r in rows if r["colour"] == kind]
        rows.append(dict(image=f"TOTAL ({len(mine)} images)", width="", height="", transparent="", colour=kind,
                         bytes=sum(r["bytes"] for r in mine), bpp="",
                         visible_psnr=round(float(np.mean([r["visible_psnr"] for r in mine])), 2)))
    return rows


def main() -> None:
    import argparse
    import csv

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fill", action="store_true", help="measure the fill under transparent pixels")
    parser.add_argument("--quality", type=int, default=75)
    args = parser.parse_args()
    if args.fill:
        rows = fill_rows(args.quality)
        with open(RESULTS / "alpha_fill.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return
    rows = []
    for name, rgba in images():
        rows += measure(name, rgba)
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["coder"]] = totals.get(r["coder"], 0) + r["bytes"]
    n = len({r["image"] for r in rows})
    for coder, total in totals.items():
        rows.append(dict(image=f"TOTAL ({n} images)", width="", height="", coder=coder, bytes=total, bpp="",
                         encode_ms=round(sum(r["encode_ms"] for r in rows if r["coder"] == coder), 1),
                         decode_ms=""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "alpha.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    ref = totals["webp-alph"]
    for coder, total in totals.items():
        print(f"{coder:12s} {total:9d} bytes  {100 * (total / ref - 1):+6.1f}% vs webp-alph")


if __name__ == "__main__":
    main()
