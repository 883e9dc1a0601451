"""How many threads bbimg's own parallel work may use (the PNG writer, the KL of a large latent,
ONNX Runtime's sessions): ``BBIMG_THREADS`` when set, else every CPU this process may run on."""
from __future__ import annotations

import os


def requested() -> int:
    """``BBIMG_THREADS`` as a number, or 0 when it is unset or empty (a library's own default)."""
    return int(os.environ.get("BBIMG_THREADS", "0") or 0)


def available() -> int:
    """``requested()``, else the CPUs this process may run on."""
    threads = requested()
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
