"""CompressAI's bmshj2018-hyperprior (Ballé et al. 2018, scale hyperprior) without torchvision.

    pip install --no-deps compressai==1.2.8       # see bench/requirements-compressai.txt

CompressAI is installed *without its dependencies* on purpose: they include torchvision and
torch-geometric, which pip would pull in a build matching its own idea of torch (replacing the
pinned CPU torch, or installing a torchvision that does not import beside it). Its compiled parts
(``compressai.ans``, ``compressai._CXX``) are plain pybind11 extensions that do not link libtorch,
so the wheel works with whatever torch is installed.

What needs torchvision is only the package's ``__init__`` chain: ``compressai/__init__.py`` imports
every subpackage (datasets need pandas, point-cloud layers need einops and torch-geometric), and
``compressai.registry.transforms`` builds a registry from ``torchvision.transforms`` and
``torch_geometric.transforms`` at import time. The image models need none of that, so
:func:`scale_hyperprior` imports them without running those two ``__init__`` files:

* the ``compressai`` and ``compressai.models`` package objects are created from their import specs
  but not executed, and ``compressai`` gets the three entropy-coder functions its ``__init__``
  defines (the rANS coder ``"ans"`` is the only one, as in a default install);
* ``compressai.registry.transforms`` is replaced by an empty registry (transforms are data
  augmentation, never used by a model).

Everything else (``compressai.models.google.ScaleHyperprior``, entropy models, GDN layers, the rANS
coder) is CompressAI's own code, unchanged. Needs numpy and scipy besides torch. If CompressAI was
already imported normally (a full install with torchvision), that import is used as is.
"""
from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["scale_hyperprior", "scale_hyperprior_class", "compressai_version", "HYPERPRIOR_CHANNELS"]

# (N, M) per quality, as compressai.zoo.image.cfgs["bmshj2018-hyperprior"]
HYPERPRIOR_CHANNELS = {q: (128, 192) if q <= 5 else (192, 320) for q in range(1, 9)}

INSTALL_HINT = "pip install --no-deps compressai==1.2.8 (see bench/requirements-compressai.txt)"


def compressai_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("compressai")
    except PackageNotFoundError:
        return "unknown"


def scale_hyperprior_class():
    """compressai.models.ScaleHyperprior. Imports compressai.models.google without executing compressai/__init__ or models/__init__."""
    full = sys.modules.get("compressai")
    if full is not None and hasattr(full, "zoo"):  # a normal, complete import already happened
        from compressai.models import ScaleHyperprior
        return ScaleHyperprior
    spec = importlib.util.find_spec("compressai")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"CompressAI is not installed: {INSTALL_HINT}")
    if "compressai" not in sys.modules:
        pkg = importlib.util.module_from_spec(spec)  # the package object, __init__ not run
        pkg.__version__ = compressai_version()
        pkg._entropy_coder = "ans"
        pkg._available_entropy_coders = ["ans"]

        def set_entropy_coder(name: str) -> None:
            if name not in pkg._available_entropy_coders:
                raise ValueError(f"invalid entropy coder {name!r}, choose from {pkg._available_entropy_coders}")
            pkg._entropy_coder = name

        pkg.set_entropy_coder = set_entropy_coder
        pkg.get_entropy_coder = lambda: pkg._entropy_coder
        pkg.available_entropy_coders = lambda: pkg._available_entropy_coders
        sys.modules["compressai"] = pkg
    if "compressai.registry.transforms" not in sys.modules:
        stub = types.ModuleType("compressai.registry.transforms")
        stub.__doc__ = "bench/compressai_shim.py: empty transform registry (no torchvision)"
        stub.TRANSFORMS = {}

        def register_transform(name: str):
            def decorator(cls):
                stub.TRANSFORMS[name] = cls
                return cls
            return decorator

        stub.register_transform = register_transform
        sys.modules[stub.__name__] = stub
    if "compressai.models" not in sys.modules:
        models_spec = importlib.util.find_spec("compressai.models")
        models = importlib.util.module_from_spec(models_spec)  # skips models/__init__ (point-cloud models)
        sys.modules["compressai.models"] = models
        sys.modules["compressai"].models = models
    from compressai.models.google import ScaleHyperprior
    return ScaleHyperprior


def scale_hyperprior(quality: int = 3, seed: int = 0):
    """bmshj2018-hyperprior at ``quality`` (1..8) with random weights (seeded), entropy coder tables
    built (``update(force=True)``): ready for ``compress`` / ``decompress``. For timing only: the
    weights are not trained, so the reconstructions are meaningless."""
    import torch

    if quality not in HYPERPRIOR_CHANNELS:
        raise ValueError(f"quality must be in 1..8, got {quality}")
    ScaleHyperprior = scale_hyperprior_class()
    torch.manual_seed(seed)
    net = ScaleHyperprior(*HYPERPRIOR_CHANNELS[quality]).eval()
    net.update(force=True)
    return net


if __name__ == "__main__":  # smoke test: one 256x256 round trip
    import torch

    net = scale_hyperprior()
    with torch.no_grad():
        x = torch.rand(1, 3, 256, 256)
        out = net.compress(x)
        y = net.decompress(out["strings"], out["shape"])["x_hat"]
    third = sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in
                   {"torchvision", "torch_geometric", "pandas", "einops"})
    print(f"compressai {compressai_version()}: {sum(len(s[0]) for s in out['strings'])} bytes, "
          f"output {tuple(y.shape)}; torchvision/torch_geometric/pandas/einops imported: {third or 'none'}")
