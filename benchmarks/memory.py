"""Peak tensor memory for the benchmark scripts: see :func:`converse_plugin.utils.memory.peak_bytes`."""
from converse_plugin.utils.memory import peak_bytes

__all__ = ['peak_bytes']
