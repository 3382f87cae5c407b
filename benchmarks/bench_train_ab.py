"""Two training steps compared turn by turn: A and B in two worker processes that take turns, one step each.

    .venv/bin/python benchmarks/bench_train_ab.py --a eager,adam=default,allocator=system,ftz=off,source=/tmp/f3cd289 \
        --b compile [--recipe dncnn] [--steps 12] [--warmup 2] [--threads 1]

A shared machine's speed drifts by 10-20% within minutes, so two benchmark runs one after the other compare
the hours they ran in as much as the code. Here the two steps alternate (A B, B A, A B, ...; only one worker runs
at a time), so each pair of steps sees the same machine. The table gives both medians, the median of the
per-pair ratios A/B, and their range.

A side is ``MODE[,adam=auto|default|fused][,allocator=cache|system][,ftz=on|off][,source=DIR]``: a mode and the
options of ``bench_train_step.py`` (``ftz``: its ``--flush-denormal``; ``source``: another checkout's
converse_plugin, e.g. the baseline before the custom operator, ``git worktree add /tmp/f3cd289 f3cd289``). Each
worker is ``bench_train_step.py``'s recipe and step, in its own process (two checkouts cannot share one).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from os import path as osp

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:  # bench_train_step, as a script's neighbour (the workers run this file as a script)
    sys.path.insert(0, HERE)
KEYS = {'adam': ('auto', 'default', 'fused'), 'allocator': ('cache', 'system'), 'ftz': ('on', 'off'), 'source': None}


def parse_side(text: str) -> dict:
    """``MODE[,key=value...]`` -> {'mode': ..., 'adam': ..., 'allocator': ..., 'ftz': ..., 'source': ...};
    SystemExit naming the part that is wrong."""
    from bench_train_step import MODES
    mode, *rest = [part.strip() for part in text.split(',')]
    if mode not in MODES:
        raise SystemExit(f'side {text!r}: the mode must be one of {MODES}, got {mode!r}')
    side = {'mode': mode, 'adam': 'auto', 'allocator': 'cache', 'ftz': 'on', 'source': None}
    for part in rest:
        key, sep, value = part.partition('=')
        if not sep or key not in KEYS:
            raise SystemExit(f'side {text!r}: {part!r} is not one of {", ".join(k + "=..." for k in KEYS)}')
        if KEYS[key] and value not in KEYS[key]:
            raise SystemExit(f'side {text!r}: {key} must be one of {KEYS[key]}, got {value!r}')
        side[key] = value
    return side


def worker(spec: str) -> None:
    """Build the step, then run one step per 'step' line on stdin and answer with its seconds."""
    cfg = json.loads(spec)
    import bench_train_step as bts
    if cfg['source']:
        bts.use_source(cfg['source'])
    import torch
    torch.set_num_threads(cfg['threads'])
    # stdout is the protocol: what the setup logs goes to stderr
    bts.setup_cpu('cpu', cfg['allocator'], cfg['ftz'] == 'on', lambda msg: print(msg, file=sys.stderr))
    _, _, _, _, (batch, size), _, _ = bts.RECIPES[cfg['recipe']]
    built = bts.build(cfg['recipe'], cfg['mode'], 'cpu', cfg['batch'] or batch, cfg['size'] or size, cfg['adam'])
    if built is None:
        print('n/a', flush=True)
        return
    _, step = built
    print('ready', flush=True)
    for line in sys.stdin:
        if line.strip() != 'step':
            break
        start = time.perf_counter()
        step()
        print(time.perf_counter() - start, flush=True)


def start(side: dict, args) -> subprocess.Popen:
    cfg = dict(side, recipe=args.recipe, threads=args.threads, batch=args.batch, size=args.size)
    proc = subprocess.Popen([sys.executable, osp.abspath(__file__), '--worker', json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE)
    return proc


def ask(proc: subprocess.Popen, line: str) -> str:
    proc.stdin.write(line + '\n')
    proc.stdin.flush()
    answer = proc.stdout.readline().strip()
    if not answer:
        raise SystemExit(f'a worker stopped (exit status {proc.wait()}); its error is above')
    return answer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--a', help='MODE[,adam=...][,allocator=...][,ftz=...][,source=DIR] (required)')
    parser.add_argument('--b', help='the same for the other side (required)')
    parser.add_argument('--recipe', default='dncnn')
    parser.add_argument('--steps', type=int, default=12, help='timed steps per side')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--size', type=int, default=None)
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if not (args.a and args.b):
        parser.error('--a and --b are both required')
    from bench_train_step import RECIPES
    if args.recipe not in RECIPES:
        raise SystemExit(f'--recipe must be one of {list(RECIPES)}, got {args.recipe!r}')
    sides = {'A': parse_side(args.a), 'B': parse_side(args.b)}
    procs = {name: start(side, args) for name, side in sides.items()}
    try:
        for name, proc in procs.items():  # both build at once; only the timed steps take turns
            if proc.stdout.readline().strip() != 'ready':
                raise SystemExit(f'side {name} ({getattr(args, name.lower())}) is not available for {args.recipe}')
        times = {'A': [], 'B': []}
        for i in range(args.warmup + args.steps):
            for name in ('A', 'B') if i % 2 == 0 else ('B', 'A'):
                seconds = float(ask(procs[name], 'step'))
                if i >= args.warmup:
                    times[name].append(seconds * 1e3)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait()
    ratios = [a / b for a, b in zip(times['A'], times['B'])]
    print(f'# {args.recipe}, {args.steps} steps per side after {args.warmup} warm-up, turn by turn, '
          f'{args.threads} thread(s), {os.cpu_count()} cores')
    print('| side | step | median ms | min ms | max ms |\n|---|---|---:|---:|---:|')
    for name in ('A', 'B'):
        t = times[name]
        print(f'| {name} | {getattr(args, name.lower())} | {statistics.median(t):.0f} | {min(t):.0f} | {max(t):.0f} |')
    of_medians = statistics.median(times['A']) / statistics.median(times['B'])
    print(f'\nA/B: median of the per-pair ratios {statistics.median(ratios):.3f} (range {min(ratios):.3f}-'
          f'{max(ratios):.3f}); ratio of the medians {of_medians:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
