"""Peak tensor memory for the benchmark scripts: see :func:`converse_plugin.engine.memory.peak_bytes`.
Importing this module imports no converse_plugin (``bench_train_step.py --source`` picks which one)."""

__all__ = ["peak_bytes", "write_report"]


def peak_bytes(*args, **kwargs):
    """:func:`converse_plugin.engine.memory.peak_bytes`."""
    from converse_plugin.engine.memory import peak_bytes as measure
    return measure(*args, **kwargs)


def write_report(report: dict, name: str, device: str, path: str | None = None, quiet: bool = False) -> str:
    """Write a benchmark's JSON report to ``path`` (default ``benchmarks/results/<name>_<device>.json``) and,
    unless ``quiet``, say where; returns the path. The benchmarks also call it quietly after each result, so
    that a run stopped by a time limit keeps what it measured."""
    import json
    import os
    from os import path as osp

    out = path or osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'benchmarks', 'results',
                           f'{name}_{device}.json')
    os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2)
    if not quiet:
        print(f'\nwrote {out}')
    return out
