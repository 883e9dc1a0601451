"""Where the time of a command-line decode goes, stage by stage, beside WebP, AVIF and JPEG XL.

    nice python bench/decode_profile.py                      # Kodak kodim05 + a 12 MP photo, 3 runs
    python bench/decode_profile.py --repeat 5 --no-large
    python bench/decode_profile.py --tree before=/tmp/old_tree  # also an older source tree, interleaved

Images: a Kodak image and a 12 MP photo (a training photo upscaled to 4000 x 3000 with Lanczos,
the size of a phone photo). Each is coded once with ``bbimg encode`` (default quality), WebP
(Pillow, quality 75, method 6), AVIF (Pillow's libavif, quality 60, speed 6) and JPEG XL
(imagecodecs' libjxl, distance 3.2, effort 7); the files are kept in ``--workdir`` and reused.

Every measurement is a fresh process, as a user runs the command. For bbimg the process times
each stage with ``perf_counter`` (wall) and ``process_time`` (CPU, all threads): the imports (the
CLI module, the codec, ONNX Runtime), reading the file, loading the model (its hash and the first
ONNX Runtime session), the other sessions, then ``bbimg.codec.decode`` itself split at its
progress reports (checks; decoding z; decoding y; synthesis with the crop to uint8), the z and y
priors timed inside their stages (the rest of a stage is REC), and writing the PNG (with the
CLI's own writer, ``cli.main._encode_image``; Pillow at zlib level 1 in trees without it). The other
codecs' PNGs are Pillow's at zlib level 1. Around them: the
interpreter's start-up (``python -c pass``), the whole process, and ``bbimg decode`` itself (the
console script, not a shell shim). The other codecs get the same process: imports, read,
decode, PNG write. ``python -X importtime`` splits the imports by top-level package (the modules' own times).

The trees are byte-compiled first (``compileall``), as an installed package is. The machine may be shared: every process is run ``--repeat`` times, interleaved (each repetition
runs every codec and tree once, in turn), and the CSV keeps the fastest and the median wall time
and the fastest CPU time. ``--tree LABEL=PATH`` adds a source tree (a copy of the package with
``cli/`` as ``bbimg/cli``) run from PYTHONPATH in the same repetitions, for before/after figures;
``--no-installed`` runs only such trees (snapshots, when the working copy is in flux). Where the
default model has a fast synthesis, the same file is also decoded with it (codec ``bbimg --fast``,
``bbimg decode --fast``), in the same repetitions.

Writes bench/results/decode_profile.csv: image, width, height, codec, tree, stage, wall_min_s,
wall_median_s, cpu_min_s, runs, bytes, bpp, isa.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import isa  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
KODAK = ROOT.parent / "shared" / "data" / "kodak"
TRAIN = ROOT.parent / "shared" / "data" / "train"
DEFAULT_PHOTO = "debian_lomiri_picosdeeuropa_by_Aitzol_Berasategi.jpg"
LARGE_SIZE = (4000, 3000)
COLUMNS = ["image", "width", "height", "codec", "tree", "stage", "wall_min_s", "wall_median_s", "cpu_min_s", "runs",
           "bytes", "bpp", "isa"]

# The child processes: nothing but builtins before the clock starts.
_CLOCK = """
import time, sys, json
_T, _w, _c = [], time.perf_counter(), time.process_time()
def lap(stage):
    global _w, _c
    w, c = time.perf_counter(), time.process_time()
    _T.append((stage, w - _w, c - _c))
    _w, _c = w, c
"""

BBIMG_CHILD = _CLOCK + """
src, out = sys.argv[1], sys.argv[2]
fast = sys.argv[3:] == ["fast"]
import bbimg.cli.main
lap("import cli")
from bbimg import codec
lap("import codec")
import onnxruntime
lap("import onnxruntime")
import io
from bbimg import format as bbi, runtime
from bbimg.transforms import load_transforms
with open(src, "rb") as f:
    data = f.read()
h = bbi.read(data).header
lap("read file")
name = codec.model_of(h) if hasattr(codec, "model_of") else h.model_name  # 2.0 files name no model
backend = load_transforms(name, "cpu", h.height, h.width).backend
lap("model load")
for part in ("yprior", runtime.FAST_SYNTHESIS if fast else "synthesis"):
    if hasattr(backend, "session"):
        backend.session(part, h.quality_t)
    else:  # a tree whose sessions take t as an input
        backend._sessions[part] = runtime._session(backend._files[part])
lap("sessions")
spent = {}
def timed(name, fn):
    def run(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            a, b = spent.get(name, (0.0, 0.0))
            spent[name] = (a + time.perf_counter() - w, b + time.process_time() - c)
    return run
for name in ("z_prior", "y_prior"):  # the cached back end codec.decode will use
    setattr(backend, name, timed(name, getattr(backend, name)))
marks = [("checks", _w, _c)]
report = lambda stage: marks.append((stage, time.perf_counter(), time.process_time()))
image = codec.decode(data, progress=report, fast=True) if fast else codec.decode(data, progress=report)
marks.append(("end", time.perf_counter(), time.process_time()))
span = {a[0]: (b[1] - a[1], b[2] - a[2]) for a, b in zip(marks, marks[1:])}
minus = lambda a, b: (a[0] - b[0], a[1] - b[1])
_T += [("checks",) + span["checks"],
       ("z prior",) + spent["z_prior"], ("REC z",) + minus(span["decoding z"], spent["z_prior"]),
       ("y prior",) + spent["y_prior"], ("REC y",) + minus(span["decoding y"], spent["y_prior"]),
       ("synthesis",) + span["synthesis"]]
_w, _c = marks[-1][1:]
write = getattr(sys.modules["bbimg.cli.main"], "_encode_image", None)  # the CLI's own PNG writer, if any
if write is not None:
    encoded = write(image, "PNG")
else:  # older trees: Pillow at zlib level 1
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    encoded = buf.getbuffer()
with open(out, "wb") as f:
    f.write(encoded)
lap("png write")
rss = 0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
print(json.dumps({"stages": _T, "peak_rss_mb": rss}))
"""

OTHER_CHILD = _CLOCK + """
src, out, codec_name = sys.argv[1], sys.argv[2], sys.argv[3]
import io
from PIL import Image
if codec_name == "jpegxl":
    import imagecodecs
lap("imports")
with open(src, "rb") as f:
    data = f.read()
lap("read file")
if codec_name == "jpegxl":
    image = Image.fromarray(imagecodecs.jpegxl_decode(data))
else:
    image = Image.open(io.BytesIO(data))
    image.load()
lap("decode")
buf = io.BytesIO()
image.save(buf, format="PNG", compress_level=1)
with open(out, "wb") as f:
    f.write(buf.getbuffer())
lap("png write")
print(json.dumps({"stages": _T}))
"""

IMPORTS = "import bbimg.cli.main; from bbimg import codec; import onnxruntime"


def bbimg_script() -> str:
    """The ``bbimg`` console script itself (a pyenv shim in front of it costs a shell and a fork)."""
    beside = Path(sys.executable).with_name("bbimg")
    return str(beside) if beside.is_file() else (shutil.which("bbimg") or sys.exit("bbimg is not installed"))


def env_for(tree: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BBIMG_BACKEND", "BBIMG_MODEL_PATH")}
    if tree:
        env["PYTHONPATH"] = tree
    return env


def run(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str, str]:
    import time
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout, proc.stderr


def import_split(stderr: str, floor: float = 0.002) -> dict[str, float]:
    """``-X importtime`` output -> seconds of import work (the modules' own times) per top-level
    package; packages under ``floor`` seconds are summed as 'other'."""
    out: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            out[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
    small = [k for k, v in out.items() if v < floor]
    out["other"] = sum(out.pop(k) for k in small)
    return out


def prepare(workdir: Path, photo: Path | None, kodak: str) -> list[tuple[str, Path]]:
    """The test images as PNG files in ``workdir``: the Kodak image and the 12 MP upscale."""
    from PIL import Image

    images = [(kodak, KODAK / f"{kodak}.png")]
    if photo is not None:
        target = workdir / f"{photo.stem}_{LARGE_SIZE[0]}x{LARGE_SIZE[1]}.png"
        if not target.exists():
            with Image.open(photo) as im:
                im.convert("RGB").resize(LARGE_SIZE, Image.LANCZOS).save(target, compress_level=1)
        images.append(("photo12mp", target))
    return images


def encode_all(name: str, png: Path, workdir: Path, script: str, tree: str | None) -> dict[str, Path]:
    """The image coded by every codec (kept in ``workdir``: a 12 MP bbimg encode takes a while)."""
    import imagecodecs
    import numpy as np
    from PIL import Image

    files = {c: workdir / f"{name}.{ext}" for c, ext in
             (("bbimg", "bbi"), ("webp", "webp"), ("avif", "avif"), ("jpegxl", "jxl"))}
    if not files["bbimg"].exists():
        subprocess.run([script, "encode", "--quiet", str(png), str(files["bbimg"])], check=True, env=env_for(tree))
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        if not files["webp"].exists():
            rgb.save(files["webp"], "WEBP", quality=75, method=6)
        if not files["avif"].exists():
            rgb.save(files["avif"], "AVIF", quality=60, speed=6, subsampling="4:4:4")
        if not files["jpegxl"].exists():
            files["jpegxl"].write_bytes(imagecodecs.jpegxl_encode(np.asarray(rgb), distance=3.2, effort=7))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kodak", default="kodim05")
    parser.add_argument("--photo", type=Path, default=TRAIN / DEFAULT_PHOTO, help="training photo to upscale")
    parser.add_argument("--no-large", action="store_true", help="only the Kodak image")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="also run bbimg from this source tree (PYTHONPATH), interleaved")
    parser.add_argument("--current-label", default="current")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bbimg_decode_profile")
    parser.add_argument("--out", type=Path, default=RESULTS / "decode_profile.csv")
    parser.add_argument("--no-compile", action="store_true", help="do not byte-compile the trees first")
    parser.add_argument("--no-installed", action="store_true",
                        help="only the --tree trees (the first one encodes the test files)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    script = bbimg_script()
    trees = ([] if args.no_installed else [(args.current_label, None)]) + [tuple(t.split("=", 1)) for t in args.tree]
    if not trees:
        sys.exit("--no-installed needs at least one --tree")
    if not args.no_compile:  # an installed package has its bytecode; a checkout run with
        # PYTHONDONTWRITEBYTECODE=1 would compile bbimg's sources in every process (~0.1 s)
        dirs = [ROOT / "bbimg", ROOT / "cli"] + [Path(tree) / "bbimg" for _, tree in trees if tree]
        subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, dirs)], check=True,
                       stdout=subprocess.DEVNULL)
    images = prepare(args.workdir, None if args.no_large else args.photo, args.kodak)
    coded = {name: encode_all(name, png, args.workdir, script, trees[0][1]) for name, png in images}
    from PIL import Image

    sizes = {name: Image.open(png).size for name, png in images}
    wall: dict[tuple, list[float]] = defaultdict(list)
    cpu: dict[tuple, list[float]] = defaultdict(list)
    out_png = args.workdir / "out.png"
    py = sys.executable
    from bbimg.model_files import DEFAULT_MODEL, find_weights
    from bbimg.runtime import fast_synthesis_path
    fast = fast_synthesis_path(DEFAULT_MODEL, find_weights(DEFAULT_MODEL)).is_file()
    for rep in range(args.repeat):
        wall[("-", "python", "-", "interpreter start-up")].append(run([py, "-c", "pass"], env_for(None), args.workdir)[0])
        for label, tree in trees:
            _, _, err = run([py, "-X", "importtime", "-c", IMPORTS], env_for(tree), args.workdir)
            for pkg, sec in import_split(err).items():
                wall[("-", "bbimg", label, f"importtime: {pkg}")].append(sec)
        for name, _ in images:
            files = coded[name]
            for label, tree in trees:
                key = (name, "bbimg", label)
                total, stdout, _ = run([py, "-c", BBIMG_CHILD, str(files["bbimg"]), str(out_png)], env_for(tree),
                                       args.workdir)
                result = json.loads(stdout.strip().splitlines()[-1])
                for stage, w, c in result["stages"]:
                    wall[key + (stage,)].append(w)
                    cpu[key + (stage,)].append(c)
                wall[key + ("process total",)].append(total)
                wall[key + ("peak RSS MB",)].append(result["peak_rss_mb"])
                cli = run([script, "decode", "--quiet", str(files["bbimg"]), str(out_png)], env_for(tree),
                          args.workdir)[0]
                wall[key + ("bbimg decode (CLI)",)].append(cli)
                if tree is None and fast:   # the light synthesis of the same file, same process
                    key = (name, "bbimg --fast", label)
                    total, stdout, _ = run([py, "-c", BBIMG_CHILD, str(files["bbimg"]), str(out_png), "fast"],
                                           env_for(tree), args.workdir)
                    for stage, w, c in json.loads(stdout.strip().splitlines()[-1])["stages"]:
                        wall[key + (stage,)].append(w)
                        cpu[key + (stage,)].append(c)
                    wall[key + ("process total",)].append(total)
                    wall[key + ("bbimg decode (CLI)",)].append(
                        run([script, "decode", "--fast", "--quiet", str(files["bbimg"]), str(out_png)], env_for(tree),
                            args.workdir)[0])
            for codec in ("webp", "avif", "jpegxl"):
                key = (name, codec, "-")
                total, stdout, _ = run([py, "-c", OTHER_CHILD, str(files[codec]), str(out_png), codec],
                                       env_for(None), args.workdir)
                for stage, w, c in json.loads(stdout.strip().splitlines()[-1])["stages"]:
                    wall[key + (stage,)].append(w)
                    cpu[key + (stage,)].append(c)
                wall[key + ("process total",)].append(total)
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)

    arch = isa()
    rows = []
    for key, values in wall.items():
        name, codec, label, stage = key
        w, h = sizes.get(name, ("", ""))
        coded_as = "bbimg" if codec == "bbimg --fast" else codec   # the same file
        size = coded[name][coded_as].stat().st_size if name in coded and coded_as in coded[name] else ""
        rows.append(dict(image=name, width=w, height=h, codec=codec, tree=label, stage=stage,
                         wall_min_s=round(min(values), 4), wall_median_s=round(statistics.median(values), 4),
                         cpu_min_s=round(min(cpu[key]), 4) if key in cpu else "", runs=len(values), bytes=size,
                         bpp=round(size * 8 / (w * h), 4) if size else "", isa=arch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import csv
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.out} ({arch})")
    for r in rows:
        print(f"{r['image']:>10} {r['codec']:>7} {r['tree']:>8} {r['stage']:<34} {r['wall_min_s']:>9} "
              f"{r['wall_median_s']:>9} {r['cpu_min_s']:>8}")
    for name, _ in images:
        mp = sizes[name][0] * sizes[name][1] / 1e6
        for label, _ in trees:
            best = min(wall[(name, "bbimg", label, "bbimg decode (CLI)")])
            print(f"{name} {label}: bbimg decode {best:.2f} s = {mp / best:.2f} MP/s")


if __name__ == "__main__":
    main()
