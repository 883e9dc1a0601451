"""The ``bbimg`` command line (installed as ``bbimg.cli``)."""
from .main import console, main

__all__ = ["main", "console"]
