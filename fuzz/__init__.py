"""Fuzz targets for the .bbi reader and the decoder (see docs/security.md)."""
