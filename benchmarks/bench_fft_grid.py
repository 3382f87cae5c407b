"""What the FFT grid costs: Converse2D transforms each (crop + 2 * padding)^2 padded grid, and the FFT's speed
depends on that size's prime factors, not only on its area.

    .venv/bin/python benchmarks/bench_fft_grid.py [--crops 60 64 68 72 76] [--padding 6] [--batch 4]
        [--channels 128] [--threads 1] [--repeat 20] [--device cpu|cuda] [--json ...]

For each crop size, n = crop + 2 * padding, medians of ``--repeat`` runs, all sizes interleaved:
- "real": one rfft2 and one irfft2 of a (batch, channels, n, n) float32 tensor (the forward pass of one Converse2D
  layer in the real-transform form, CUDA's; the backward pass runs the same pair again);
- "pairs": one fft2 and one ifft2 of the (ceil(batch / 2), channels, n, n) complex64 pairs (the CPU's paired and
  interleaved forms: two samples per complex transform). The defaults are ConverseDnCNN's layer (128 channels, k 7, padding
6) at the CPU benchmark's batch of 4 (``bench_train_step.py``). "per crop pixel" divides by crop^2: the cost of
training on that crop size, per pixel of data, for each form.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402


def prime_factors(n: int) -> list[int]:
    """Prime factors of n >= 1 with multiplicity, ascending (1 -> [])."""
    if n < 1:
        raise ValueError(f'n must be >= 1, got {n}')
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def factor_text(n: int) -> str:
    """'76 = 2^2 * 19'-style text of n's factorisation."""
    factors = prime_factors(n)
    parts = [f'{p}^{factors.count(p)}' if factors.count(p) > 1 else str(p) for p in sorted(set(factors))]
    return f"{n} = {' * '.join(parts) or '1'}"


TRANSFORMS = ('rfft2', 'irfft2', 'fft2_pairs', 'ifft2_pairs')


def time_pair(batch: int, channels: int, n: int, device: str, repeat: int) -> list[tuple[float, ...]]:
    """(ms of each of :data:`TRANSFORMS`) for each of ``repeat`` runs: rfft2 and irfft2 of a (batch, channels,
    n, n) tensor, fft2 and ifft2 of its (ceil(batch / 2), channels, n, n) complex pairs."""
    x = torch.randn(batch, channels, n, n, device=device)
    spec = torch.fft.rfft2(x)
    pairs = torch.randn((batch + 1) // 2, channels, n, n, dtype=torch.complex64, device=device)
    fns = (lambda: torch.fft.rfft2(x), lambda: torch.fft.irfft2(spec, s=(n, n)),
           lambda: torch.fft.fft2(pairs), lambda: torch.fft.ifft2(pairs))
    runs = []
    for _ in range(repeat):
        times = []
        for fn in fns:
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == 'cuda':
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
        runs.append(tuple(times))
    return runs


def measure(crops: list[int], padding: int, batch: int, channels: int, device: str, repeat: int) -> list[dict]:
    """One row per crop size (see the module docstring); sizes interleaved, one warm-up run each."""
    grids = [c + 2 * padding for c in crops]
    for n in grids:
        time_pair(batch, channels, n, device, 1)
    runs = {n: [] for n in grids}
    for _ in range(repeat):
        for n in grids:
            runs[n] += time_pair(batch, channels, n, device, 1)
    rows = []
    for crop, n in zip(crops, grids):
        ms = {name: statistics.median(r[i] for r in runs[n]) for i, name in enumerate(TRANSFORMS)}
        pixels = batch * channels * crop * crop
        rows.append({'crop': crop, 'grid': n, 'factors': factor_text(n),
                     'largest_prime': prime_factors(n)[-1] if n > 1 else 1,
                     **{f'{name}_ms': v for name, v in ms.items()},
                     'ns_per_crop_pixel': (ms['rfft2'] + ms['irfft2']) * 1e6 / pixels,
                     'pairs_ns_per_crop_pixel': (ms['fft2_pairs'] + ms['ifft2_pairs']) * 1e6 / pixels})
    return rows


def table(rows: list[dict]) -> str:
    lines = ['| crop | grid | rfft2 ms | irfft2 ms | real: ns per crop pixel | pairs fft2 ms | pairs ifft2 ms | '
             'pairs: ns per crop pixel |', '|---:|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['crop']} | {r['factors']} | {r['rfft2_ms']:.2f} | {r['irfft2_ms']:.2f} | "
                     f"{r['ns_per_crop_pixel']:.2f} | {r['fft2_pairs_ms']:.2f} | {r['ifft2_pairs_ms']:.2f} | "
                     f"{r['pairs_ns_per_crop_pixel']:.2f} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--crops', type=int, nargs='+', default=[60, 64, 68, 72, 76])
    parser.add_argument('--padding', type=int, default=6)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--channels', type=int, default=128)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--json', default=None, help='default benchmarks/results/fft_grid_<device>.json')
    args = parser.parse_args(argv)
    if min(args.crops) < 1 or args.padding < 0 or args.batch < 1 or args.channels < 1 or args.repeat < 1:
        parser.error('crops, batch, channels and repeat must be >= 1, padding >= 0')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
    rows = measure(args.crops, args.padding, args.batch, args.channels, args.device, args.repeat)
    print(f'{args.device}, ({args.batch}, {args.channels}, n, n) float32, padding {args.padding}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}')
    print(table(rows))
    out = args.json or osp.join(REPO, 'benchmarks', 'results', f'fft_grid_{args.device}.json')
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    with open(out, 'w') as f:
        json.dump({'device': args.device, 'machine': f'{platform.machine()}, {os.cpu_count()} cores',
                   'threads': torch.get_num_threads(), 'torch': torch.__version__, 'padding': args.padding,
                   'batch': args.batch, 'channels': args.channels, 'repeat': args.repeat, 'rows': rows}, f, indent=2)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
