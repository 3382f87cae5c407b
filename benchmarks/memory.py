"""Peak tensor memory for the benchmark scripts: see :func:`converse_plugin.engine.memory.peak_bytes`."""
from converse_plugin.engine.memory import peak_bytes

__all__ = ['peak_bytes']
