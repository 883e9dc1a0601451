"""Run a bbimg fuzz target: builds the tiny model and the seed corpus, then fuzzes.

    nice -n 19 python fuzz/run.py format  --runs 1000000          # container reader
    nice -n 19 python fuzz/run.py decoder --seconds 1200          # whole decoder
    python fuzz/run.py format --engine loop --runs 20000          # without atheris

Engines: ``atheris`` (coverage-guided libFuzzer; the default when atheris imports) or ``loop`` (the
random structure-aware mutator of ``fuzz/harness.py``, no coverage feedback). Work files (model,
seeds, growing corpus, crash inputs) go to ``--work`` (default ``$TMPDIR/bbimg-fuzz``). Exit status
0 when no invariant broke.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TARGETS = {"format": HERE / "fuzz_format.py", "decoder": HERE / "fuzz_decoder.py"}
RSS_LIMIT_MB = {"format": 1400, "decoder": 1700}  # about 1 GiB above each target's baseline


def prepare(work: Path) -> Path:
    """Tiny model under work/models (put on $BBIMG_MODEL_PATH) and seed files under work/seeds."""
    models, seeds = work / "models", work / "seeds"
    os.environ["BBIMG_MODEL_PATH"] = str(models)
    from fuzz import harness

    name = harness.make_tiny_model(models)
    if not seeds.is_dir() or not any(seeds.iterdir()):
        tmp = Path(tempfile.mkdtemp(dir=work))
        for i, data in enumerate(harness.make_seeds(name)):
            (tmp / f"seed-{i}.bbi").write_bytes(data)
        shutil.rmtree(seeds, ignore_errors=True)
        tmp.rename(seeds)
    return seeds


def run_atheris(target: str, work: Path, corpus: Path, runs: int | None, seconds: float | None) -> int:
    artifacts = work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [sys.executable, str(TARGETS[target]), str(corpus), "-timeout=5", f"-rss_limit_mb={RSS_LIMIT_MB[target]}",
           "-max_len=65536", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    if runs is not None:
        cmd.append(f"-runs={runs}")
    if seconds is not None:
        cmd.append(f"-max_total_time={int(seconds)}")
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=dict(os.environ))


def run_loop(target: str, work: Path, seeds: list[bytes], runs: int | None, seconds: float | None,
             seed: int) -> int:
    from fuzz import harness

    if target == "decoder":
        import torch
        torch.set_num_threads(1)
        check, mutator = harness.check_decoder_any_size, harness.mutate_sizes
    else:
        check, mutator = harness.check_format, harness.mutate
    for data in seeds:                      # warm up before capping the address space
        check(data)
    cap = harness.limit_memory()
    faulthandler.dump_traceback_later(4 * harness.TIME_LIMIT_S, exit=True)  # a true hang ends the run

    def guarded(data: bytes):
        harness.limit_memory()              # per input: see harness.limit_memory
        faulthandler.cancel_dump_traceback_later()
        # a true hang ends the run; large claimed sizes run in a subprocess with their own time bound
        faulthandler.dump_traceback_later(4 * harness.TIME_LIMIT_S + harness.decode_time_bound(harness.LARGE_MAX_PIXELS),
                                          exit=True)
        return check(data)

    crash = work / "artifacts" / f"crash-{target}-loop.bbi"
    crash.parent.mkdir(exist_ok=True)
    print(f"loop engine, target {target}, address space capped at {cap >> 20} MiB", flush=True)
    stats = harness.fuzz_loop(guarded, seeds, iterations=runs, seconds=seconds, seed=seed, crash_file=crash,
                              mutator=mutator)
    faulthandler.cancel_dump_traceback_later()
    print(f"DONE {stats.inputs} inputs in {stats.seconds:.1f} s ({stats.per_second:.0f}/s), slowest "
          f"{stats.slowest_s * 1000:.1f} ms, outcomes {dict(sorted(stats.outcomes.items()))}", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("--runs", type=int, default=None, help="number of inputs")
    ap.add_argument("--seconds", type=float, default=None, help="time budget")
    ap.add_argument("--engine", choices=("atheris", "loop"), default=None)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bbimg-fuzz")
    ap.add_argument("--seed", type=int, default=0, help="seed of the loop engine")
    args = ap.parse_args(argv)
    if args.runs is None and args.seconds is None:
        ap.error("give --runs or --seconds")
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "loop"
    args.work.mkdir(parents=True, exist_ok=True)
    seeds_dir = prepare(args.work)
    seeds = [p.read_bytes() for p in sorted(seeds_dir.iterdir())]
    start = time.time()
    if engine == "atheris":
        corpus = args.work / f"corpus-{args.target}"
        corpus.mkdir(exist_ok=True)
        for p in seeds_dir.iterdir():
            if not (corpus / p.name).exists():
                shutil.copy(p, corpus / p.name)
        rc = run_atheris(args.target, args.work, corpus, args.runs, args.seconds)
    else:
        rc = run_loop(args.target, args.work, seeds, args.runs, args.seconds, args.seed)
    print(f"fuzz/run.py {args.target} ({engine}): exit {rc} after {time.time() - start:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
