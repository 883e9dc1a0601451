"""The ``bbimg`` command line (installed as ``bbimg.cli``)."""
from .main import main

__all__ = ["main"]
