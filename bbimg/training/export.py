"""Export shippable weights (fp16, no optimizer state) from a training state."""
from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoint import export_weights, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=Path, help="state.pt written by `bbimg train`")
    parser.add_argument("out", type=Path, help="e.g. bbimg/weights/bbimg-hvae-v3.pt")
    args = parser.parse_args()
    state = load_checkpoint(args.state)
    export_weights(state, args.out)
    print(f"{args.out}: step {state['step']}, {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
