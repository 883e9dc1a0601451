"""Join the state parts a GPU burst wrote (`bbimg train --parts-dir`) into a `bbimg train` state.

    python tools/gpu_burst/merge.py BURST_OUT_DIR ~/.cache/bbimg/train/state.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bbimg.training.checkpoint import atomic_save, read_parts  # noqa: E402


def main(src: Path, dst: Path) -> None:
    state = read_parts(src)
    atomic_save(state, dst)
    print(f"wrote {dst}: step {state['step']}, {state.get('train_hours', 0.0):.2f} training hours")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
