"""Determinism of the codec: the same image and seed give the same bytes and pixels whatever the
thread counts, in parallel processes and in threads of one process.

That the bytes stay the same across versions is tests/test_vectors.py's job.
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bbimg import codec
from conftest import smooth_image

torch = pytest.importorskip("torch")
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_same_image_and_seed_give_identical_bytes(tiny_model):
    image = smooth_image(np.random.default_rng(9), 96, 128)
    first = codec.encode(image, 50, model=tiny_model, seed=3)
    assert codec.encode(image, 50, model=tiny_model, seed=3) == first
    assert codec.encode(image, 50, model=tiny_model, seed=4) != first


def test_bytes_do_not_depend_on_thread_counts(tiny_model, monkeypatch):
    """torch intra-op threads and the REC engine's threads (the codec uses all cores) change nothing."""
    from bbimg import rec

    image = smooth_image(np.random.default_rng(10), 160, 192)
    rec_encode, rec_decode = rec.encode, rec.decode
    seen = []

    def with_threads(fn, threads):
        def call(*args, **kwargs):
            seen.append(threads)
            return fn(*args, **kwargs, threads=threads)
        return call

    outputs = []
    for torch_threads, rec_threads in ((1, 1), (2, 3), (2, None)):
        torch.set_num_threads(torch_threads)  # one_torch_thread restores it
        monkeypatch.setattr(rec, "encode", with_threads(rec_encode, rec_threads))
        monkeypatch.setattr(rec, "decode", with_threads(rec_decode, rec_threads))
        data = codec.encode(image, 70, model=tiny_model, seed=5)
        outputs.append((data, np.asarray(codec.decode(data))))
    assert {1, 3, None} <= set(seen), seen  # the thread counts reached the REC engine
    for data, pixels in outputs[1:]:
        assert data == outputs[0][0]
        assert np.array_equal(pixels, outputs[0][1])


_CHILD = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import smooth_image
from bbimg import codec
image = smooth_image(np.random.default_rng(11), 96, 112)
sys.stdout.buffer.write(codec.encode(image, 40, model=sys.argv[2], seed=6))
"""


def test_parallel_processes_give_identical_bytes(tiny_model):
    expected = codec.encode(smooth_image(np.random.default_rng(11), 96, 112), 40, model=tiny_model, seed=6)
    cmd = [sys.executable, "-c", _CHILD, str(TESTS), tiny_model]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # thread-count independence has its own test
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err.decode()
        assert out == expected


def test_threads_of_one_process_match_sequential_calls(tiny_model):
    images = [smooth_image(np.random.default_rng(20 + i), 64 + 16 * i, 96) for i in range(4)]
    sequential = [codec.encode(im, 55, model=tiny_model, seed=i) for i, im in enumerate(images)]
    decoded = [np.asarray(codec.decode(d)) for d in sequential]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda a: codec.encode(a[1], 55, model=tiny_model, seed=a[0]), enumerate(images)))
        redecoded = list(pool.map(lambda d: np.asarray(codec.decode(d)), threaded))
    assert threaded == sequential
    assert all(np.array_equal(a, b) for a, b in zip(redecoded, decoded))
