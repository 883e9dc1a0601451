"""User-facing defaults shared by the API, the command line and the Pillow plugin (no imports:
the command line reads them before it loads the codec)."""

#: Quality 1..100 when none is given.
DEFAULT_QUALITY = 75

#: Encoder effort 1..9 when none is given: today's encoder (bbimg.effort).
DEFAULT_EFFORT = 5
