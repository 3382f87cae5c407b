"""Writers for ``basicsr compare``: Markdown and CSV tables, the quality-vs-cost chart, the crop montages."""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = ['ModelCost', 'Row', 'write_csv', 'write_markdown', 'write_chart', 'crop_montage']


@dataclass
class ModelCost:
    """Cost of one model for the stated input: parameters, multiply-adds (FFTs counted), latency (median
    of the timed runs, ms) and peak memory of one forward (MB; CUDA: allocator peak, CPU: RSS growth)."""
    params: int
    macs: float
    fft_macs: float
    latency_ms: float
    peak_mem_mb: float | None
    input_size: str


@dataclass
class Row:
    model: str
    dataset: str
    images: int
    metrics: dict[str, float]
    cost: ModelCost
    published: dict[str, float] = field(default_factory=dict)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    return f'{value:.{digits}f}'


def metric_names(rows: Sequence[Row]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k for k in row.metrics if k not in names]
    return names


def write_csv(rows: Sequence[Row], path: Path, device: str) -> None:
    names = metric_names(rows)
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['model', 'dataset', 'images', *names, 'params', 'macs', 'fft_macs', 'input_size',
                         'latency_ms', 'peak_mem_mb', 'device'])
        for r in rows:
            c = r.cost
            writer.writerow([r.model, r.dataset, r.images, *(repr(r.metrics.get(n, float('nan'))) for n in names),
                             c.params, int(round(c.macs)), int(round(c.fft_macs)), c.input_size,
                             f'{c.latency_ms:.3f}', '' if c.peak_mem_mb is None else f'{c.peak_mem_mb:.1f}', device])


def write_markdown(rows: Sequence[Row], path: Path, device: str, notes: Sequence[str] = ()) -> str:
    names = metric_names(rows)
    digits = {'psnr': 2, 'ssim': 4, 'lpips': 4}
    head = ['model', 'dataset', 'images', *(n.upper() for n in names), 'published', 'params', 'GMACs (FFT)',
            'latency ms', 'peak MB']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        c = r.cost
        published = ', '.join(f'{k} {v:g}' for k, v in r.published.items()) or '–'
        lines.append('| ' + ' | '.join([
            r.model, r.dataset, str(r.images), *(_fmt(r.metrics.get(n), digits.get(n, 4)) for n in names), published,
            f'{c.params:,}', f'{c.macs / 1e9:.2f} ({c.fft_macs / 1e9:.2f})', f'{c.latency_ms:.1f}',
            _fmt(c.peak_mem_mb, 1)]) + ' |')
    cost_input = rows[0].cost.input_size if rows else '?'
    text = '\n'.join([
        '# Model comparison', '',
        f'Device: {device}. Cost columns for one input of {cost_input} (B x C x H x W; C = the model\'s input '
        'channels). MACs are real multiply-adds counted by mmengine with FFTs included '
        '(converse_plugin.engine.complexity); latency is the median forward time; peak MB is the CUDA allocator '
        'peak, or on the CPU the peak tensor memory PyTorch\'s profiler sees during one forward.', '',
        *lines, '', *notes, ''])
    path.write_text(text, encoding='utf-8')
    return text


def write_chart(rows: Sequence[Row], path: Path, metric: str = 'psnr') -> bool:
    """Scatter of ``metric`` against GMACs (one marker per model, one colour per dataset). False
    without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    for ax, (xkey, xlabel) in zip(axes, (('macs', 'GMACs (FFTs counted)'), ('latency', 'latency (ms)'))):
        for i, ds in enumerate(datasets):
            for r in (r for r in rows if r.dataset == ds):
                x = r.cost.macs / 1e9 if xkey == 'macs' else r.cost.latency_ms
                y = r.metrics.get(metric, float('nan'))
                ax.scatter([x], [y], color=f'C{i}', label=ds)
                ax.annotate(r.model, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0].legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle(f'{metric.upper()} against cost ({rows[0].cost.input_size} input)' if rows else metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _to_bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 or img.shape[2] == 1 else img


def crop_box(shape: tuple[int, ...], size: int) -> tuple[int, int, int]:
    """(top, left, size) of a centred square crop of at most ``size`` pixels."""
    h, w = shape[:2]
    size = min(size, h, w)
    return (h - size) // 2, (w - size) // 2, size


def crop_montage(panels: Sequence[tuple[str, np.ndarray]], size: int, zoom: int = 2) -> np.ndarray:
    """Side-by-side centred crops (all panels resized to the last panel's, the ground truth's, size
    with nearest neighbour first), enlarged ``zoom`` times, each with its label on top."""
    ref = panels[-1][1]
    top, left, s = crop_box(ref.shape, size)
    tiles = []
    for label, img in panels:
        img = _to_bgr(img)
        if img.shape[:2] != ref.shape[:2]:
            img = cv2.resize(img, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_NEAREST)
        tile = img[top:top + s, left:left + s]
        tile = cv2.resize(tile, (s * zoom, s * zoom), interpolation=cv2.INTER_NEAREST)
        bar = np.full((20, tile.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, label[:max(4, tile.shape[1] // 8)], (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        tiles.append(np.concatenate([bar, tile], axis=0))
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)
