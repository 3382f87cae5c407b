"""Helpers used by the tools (inference, export) and the models: tiling, checkpoint I/O, export-friendly ops."""
