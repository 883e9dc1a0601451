"""`bbimg train` with the defaults of a burst on a lent GPU machine: CUDA, packed data in .gpu/data
(tools/gpu_burst/pack_data.py), the state in /tmp/bbimg-burst and its parts in $OUT (files under
16 MiB, the only ones that come back; tools/gpu_burst/merge.py joins them). Every other option is
`bbimg train`'s; give --minutes for the deadline and --init for the weights to start from.

    python tools/gpu_burst/train.py --init bbimg/weights/bbimg-hvae-v5.pt --minutes 8 --batch 16 \
        --crop 256 --lr 1e-4 --lr-min 1e-5 --decay-from 0.3 --warmup-steps 300 --dim-kl-cap 8
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cli.train_cmd import train  # noqa: E402

BURST_DEFAULTS = {"device": "cuda", "data": [".gpu/data"], "state_dir": "/tmp/bbimg-burst",
                  "parts_dir": os.environ.get("OUT", "/tmp/bbimg-burst/parts"), "checkpoint_minutes": 2.0}

if __name__ == "__main__":
    train.main(sys.argv[1:], prog_name="tools/gpu_burst/train.py", default_map=BURST_DEFAULTS)
