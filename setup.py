"""Native extension of bbimg (``bbimg._core``): the REC engine and the range coder.

All metadata lives in pyproject.toml; this file only declares the extension. Build in place
with ``python setup.py build_ext --inplace`` or install with
``pip install -e . --no-build-isolation``.

Environment:
  BBIMG_DEBUG_BUILD=1   -O0 -g with asserts (REQUIRES: checks inside the engine).
  BBIMG_NO_CUDA=1       never build the CUDA kernels, even when nvcc is found.
  BBIMG_CUDA_ARCHS      semicolon list of SM versions for nvcc (default "80;90").
  NVCC                  path of nvcc (default: found on PATH, then CUDA_HOME/bin).

As in imagecodecs/CompressAI there is one table of extensions; the CUDA object is added when
nvcc exists. If nvcc exists but the CUDA build fails, the build fails (set BBIMG_NO_CUDA=1 to
build without it).
"""
from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from pybind11.setup_helpers import build_ext as _pybind_build_ext
from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEBUG = os.environ.get("BBIMG_DEBUG_BUILD", "") not in ("", "0")
NO_CUDA = os.environ.get("BBIMG_NO_CUDA", "") not in ("", "0")


def _version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else "0+unknown"


# One hash for the build and for bbimg.rec's stale-build check, loaded by path (bbimg itself
# needs numpy and the extension being built).
_SOURCES = runpy.run_path(str(ROOT / "bbimg" / "rec" / "_sources.py"))


def _find_nvcc() -> str | None:
    if NO_CUDA:
        return None
    cand = os.environ.get("NVCC") or shutil.which("nvcc")
    if not cand:
        home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
        p = Path(home) / "bin" / "nvcc"
        cand = str(p) if p.exists() else None
    return cand


def _find_cuda_home(nvcc: str | None) -> Path | None:
    """The CUDA toolkit root holding lib64/libcudart_static.a (nvcc may be a wrapper script)."""
    if not nvcc:
        return None
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             str(Path(nvcc).resolve().parent.parent), "/usr/local/cuda"]
    for c in cands:
        if c and (Path(c) / "lib64" / "libcudart_static.a").exists():
            return Path(c)
    try:  # ask nvcc itself
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True).stderr
        m = re.search(r"TOP=(\S+)", out)
        if m and (Path(m.group(1)) / "lib64" / "libcudart_static.a").exists():
            return Path(m.group(1))
    except OSError:
        pass
    raise RuntimeError(f"nvcc found at {nvcc} but no CUDA toolkit with lib64/libcudart_static.a; "
                       "set CUDA_HOME, or BBIMG_NO_CUDA=1 to build without CUDA")


NVCC = _find_nvcc()
CUDA_HOME = _find_cuda_home(NVCC)

OPT = ["-O0", "-g", "-UNDEBUG", "-DBBIMG_DEBUG"] if DEBUG else ["-O3", "-DNDEBUG"]
COMMON = ["-ffp-contract=off", "-fno-fast-math", "-Wall"]
DEFINES = [
    ("VERSION_INFO", f'"{_version()}"'),
    ("BBIMG_SOURCE_HASH", f'"{_SOURCES["source_hash"](CSRC)}"'),
]
LINK: list[str] = []
if CUDA_HOME is not None:
    DEFINES.append(("BBIMG_WITH_CUDA", "1"))
    LINK = [f"-L{CUDA_HOME / 'lib64'}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]

EXTENSIONS = [
    Pybind11Extension(
        "bbimg._core",
        sources=[
            "csrc/bindings.cpp",
            "csrc/blocked_ops.cpp",
            "csrc/rec.cpp",
            "csrc/rec_avx2.cpp",
            "csrc/rec_vnni.cpp",
            "csrc/rec_gen_avx512.cpp",
            "csrc/rec_screen_avx2.cpp",
            "csrc/rec_indices.cpp",
        ],
        include_dirs=["csrc"],
        depends=sorted(str(p.relative_to(ROOT)) for p in CSRC.iterdir() if p.suffix in (".h", ".cu", ".cuh")),
        define_macros=DEFINES,
        extra_compile_args=OPT + COMMON,
        extra_link_args=LINK + (["-pthread"]),
        cxx_std=17,
    ),
]
CUDA_SOURCES = {"bbimg._core": ["csrc/rec_cuda.cu"]}


class build_ext(_pybind_build_ext):
    """Compiles the .cu sources with nvcc into objects linked into the extension."""

    def run(self) -> None:
        # Rebuild everything when the build configuration (CUDA on/off, debug) changes, which
        # setuptools' timestamp check cannot see.
        stamp = Path(self.build_temp) / "bbimg_build_config.txt"
        config = f"cuda={NVCC!r} debug={DEBUG} archs={os.environ.get('BBIMG_CUDA_ARCHS', '80;90')}"
        if not stamp.exists() or stamp.read_text() != config:
            self.force = True
        super().run()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(config)

    def build_extensions(self) -> None:
        if NVCC:
            for ext in self.extensions:
                for src in CUDA_SOURCES.get(ext.name, []):
                    ext.extra_objects.append(self._nvcc(src))
        super().build_extensions()

    def _nvcc(self, src: str) -> str:
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        obj = out_dir / (Path(src).stem + ".o")
        archs = [a for a in os.environ.get("BBIMG_CUDA_ARCHS", "80;90").split(";") if a.strip()]
        gencode: list[str] = []
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
        cmd = [
            NVCC, "-c", str(ROOT / src), "-o", str(obj), "-std=c++17",
            "-O0" if DEBUG else "-O3", "-g" if DEBUG else "-DNDEBUG",
            "--fmad=false", "-Xcompiler", "-fPIC,-ffp-contract=off",
            f"-I{CSRC}", "-DBBIMG_WITH_CUDA=1", *gencode,
        ]
        print("nvcc:", " ".join(cmd), flush=True)
        try:
            subprocess.run(cmd, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(
                f"CUDA build of {src} failed ({exc}); fix it or set BBIMG_NO_CUDA=1 to build "
                "the CPU-only extension"
            ) from exc
        return str(obj)


setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": build_ext})
