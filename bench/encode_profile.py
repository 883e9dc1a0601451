"""Where the time of a command-line encode goes, stage by stage (the encode's twin of decode_profile.py).

    nice python bench/encode_profile.py                  # Kodak kodim05 + a 12 MP photo, 3 runs
    python bench/encode_profile.py --repeat 5 --no-large
    python bench/encode_profile.py --tree before=/tmp/old_tree  # also an older source tree, interleaved

Images: those of ``bench/decode_profile.py`` (a Kodak image and a training photo upscaled to
4000 x 3000, kept in its work folder). Every measurement is a fresh process, as a user runs the
command. The process times each stage with ``perf_counter`` (wall) and ``process_time`` (CPU, all
threads): the imports (the CLI module, the codec, ONNX Runtime), reading the image, loading the
model, then ``bbimg.codec.encode`` itself split at its progress reports and with the transforms
timed inside them: the analysis transform, the hyper transform (the rest of that stage: the image's
preparation), coding z (the z prior and REC), the y prior, and coding y (planning and the REC
candidate search), then writing the file. Around them: the whole process and the ``bbimg encode`` console
script itself at the default effort and at ``-e 1``. Runs are interleaved by repetition and the
CSV keeps the fastest and the median wall time and the fastest CPU time. ``--tree LABEL=PATH``
adds a source tree (a copy of the package with its extension built, run with PYTHONPATH; the
command-line module stays the installed one), run in turn with the installed code in every
repetition, so that the two are compared on a machine in the same state (``tree`` column; the
installed code is ``--current-label``, default "current").

Writes bench/results/encode_profile.csv: image, width, height, effort, tree, stage, wall_min_s,
wall_median_s, cpu_min_s, runs, bytes, bpp, isa.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import isa  # noqa: E402
from decode_profile import DEFAULT_PHOTO, RESULTS, TRAIN, _CLOCK, bbimg_script, env_for, prepare, run  # noqa: E402

COLUMNS = ["image", "width", "height", "effort", "tree", "stage", "wall_min_s", "wall_median_s", "cpu_min_s", "runs",
           "bytes", "bpp", "isa"]

ENCODE_CHILD = _CLOCK + """
src, out = sys.argv[1], sys.argv[2]
import bbimg.cli.main
lap("import cli")
from bbimg import codec
lap("import codec")
import onnxruntime
lap("import onnxruntime")
from PIL import Image
from bbimg.transforms import load_transforms
with Image.open(src) as im:
    im.load()
    lap("read image")
    tr = load_transforms(codec.DEFAULT_MODEL, "cpu", im.height, im.width)
    lap("model load")
    spent = {}
    def timed(name, fn):
        def call(*args, **kwargs):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                a, b = spent.get(name, (0.0, 0.0))
                spent[name] = (a + time.perf_counter() - w, b + time.process_time() - c)
        return call
    backend = tr.backend  # cached: the one codec.encode will use
    for name in ("analysis", "hyper", "y_prior"):
        setattr(backend, name, timed(name, getattr(backend, name)))
    marks = [("start", _w, _c)]
    report = lambda stage: marks.append((stage, time.perf_counter(), time.process_time()))
    data = codec.encode(im, progress=report)
    marks.append(("end", time.perf_counter(), time.process_time()))
span = {a[0]: (b[1] - a[1], b[2] - a[2]) for a, b in zip(marks, marks[1:])}
minus = lambda a, *b: (a[0] - sum(x[0] for x in b), a[1] - sum(x[1] for x in b))
_T += [("image preparation",) + span["start"],
       ("analysis transform",) + spent["analysis"], ("hyper transform",) + spent["hyper"],
       ("analysis stage, other",) + minus(span["analysis"], spent["analysis"], spent["hyper"]),
       ("y prior",) + spent["y_prior"], ("coding z (prior + REC)",) + minus(span["coding z"], spent["y_prior"]),
       ("coding y (plan + REC)",) + span["coding y"]]
_w, _c = marks[-1][1:]
with open(out, "wb") as f:
    f.write(data)
lap("file write")
print(json.dumps({"stages": _T, "bytes": len(data)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kodak", default="kodim05")
    parser.add_argument("--photo", type=Path, default=TRAIN / DEFAULT_PHOTO, help="training photo to upscale")
    parser.add_argument("--no-large", action="store_true", help="only the Kodak image")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bbimg_decode_profile")
    parser.add_argument("--out", type=Path, default=RESULTS / "encode_profile.csv")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="also run bbimg from this source tree (PYTHONPATH), interleaved")
    parser.add_argument("--current-label", default="current")
    args = parser.parse_args()
    trees = [(args.current_label, None)] + [tuple(t.split("=", 1)) for t in args.tree]
    args.workdir.mkdir(parents=True, exist_ok=True)
    script = bbimg_script()
    images = prepare(args.workdir, None if args.no_large else args.photo, args.kodak)
    from PIL import Image

    sizes = {name: Image.open(png).size for name, png in images}
    out = args.workdir / "encoded.bbi"
    py = sys.executable
    wall: dict[tuple, list[float]] = defaultdict(list)
    cpu: dict[tuple, list[float]] = defaultdict(list)
    size: dict[tuple, int] = {}
    for rep in range(args.repeat):
        for name, png in images:
            for label, tree in trees:
                total, stdout, _ = run([py, "-c", ENCODE_CHILD, str(png), str(out)], env_for(tree), args.workdir)
                result = json.loads(stdout.strip().splitlines()[-1])
                for stage, w, c in result["stages"]:
                    wall[(name, "5", label, stage)].append(w)
                    cpu[(name, "5", label, stage)].append(c)
                wall[(name, "5", label, "process total")].append(total)
                for effort in ("5", "1"):
                    wall[(name, effort, label, "bbimg encode (CLI)")].append(
                        run([script, "encode", "--quiet", "-e", effort, str(png), str(out)], env_for(tree),
                            args.workdir)[0])
                    size[(name, effort, label)] = out.stat().st_size
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)

    arch = isa()
    rows = []
    for (name, effort, label, stage), values in wall.items():
        w, h = sizes[name]
        nbytes = size.get((name, effort, label), "")
        key = (name, effort, label, stage)
        rows.append(dict(image=name, width=w, height=h, effort=effort, tree=label, stage=stage,
                         wall_min_s=round(min(values), 4), wall_median_s=round(statistics.median(values), 4),
                         cpu_min_s=round(min(cpu[key]), 4) if key in cpu else "",
                         runs=len(values), bytes=nbytes, bpp=round(nbytes * 8 / (w * h), 4) if nbytes else "",
                         isa=arch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.out} ({arch})")
    for r in rows:
        print(f"{r['image']:>10} e{r['effort']} {r['tree']:>8} {r['stage']:<26} {r['wall_min_s']:>9} {r['wall_median_s']:>9} "
              f"{r['cpu_min_s']:>8}")
    for name, _ in images:
        w, h = sizes[name]
        for effort in ("5", "1"):
            for label, _ in trees:
                best = min(wall[(name, effort, label, "bbimg encode (CLI)")])
                print(f"{name} -e {effort} ({label}): bbimg encode {best:.2f} s = {w * h / best / 1e6:.2f} MP/s")


if __name__ == "__main__":
    main()
