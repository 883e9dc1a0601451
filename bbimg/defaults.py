"""User-facing defaults shared by the API, the command line and the Pillow plugin (no imports:
the command line reads them before it loads the codec)."""

#: Quality 1..100 when none is given.
DEFAULT_QUALITY = 75
