"""Training-step speed, memory and operation count of the ConverseNets ("Train at GPU speed").

    .venv/bin/python benchmarks/bench_train_step.py [--device cpu|cuda] [--recipes dncnn ...]
        [--modes eager compile bf16 checkpoint] [--steps 5] [--threads 1] [--batch B] [--size S]
        [--json benchmarks/results/train_step_cpu.json] [--source DIR] [--cpu-allocator cache|system]
        [--flush-denormal on|off]

A step is forward + L1 loss + backward + Adam. ``--adam auto`` (default): in eager modes ``fused=True`` (one
kernel for all parameters), in the compile mode the model and ``opt.step`` are both compiled (inductor fuses
the update). ``--adam default``: ``torch.optim.Adam`` with its defaults, never compiled: what ``basicsr train``
builds from ``optim_g: {type: Adam}`` (``train: compile`` compiles the network only); ``--adam fused``: the
same with ``fused: true`` under ``optim_g``. Per recipe and mode it reports:

- ms/step: median over ``--steps`` timed steps after warm-up steps (compilation happens there);
- peak memory of one step over what existed before it (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
  PyTorch's memory profiler, see :func:`converse_plugin.engine.memory.peak_bytes`);
- leaf aten ops per step: ``torch.profiler`` events named ``aten::*`` with no ``aten::*`` event below
  them (what actually runs; inductor's fused kernels are not aten ops); on CUDA also the kernel count;
- minor page faults and system CPU time per timed step (``getrusage``; not on Windows): the cost of the
  memory the allocator maps afresh for large tensors (see docs/training.md on glibc's allocator settings).

Recipes (CUDA shapes; on the CPU the smaller defaults in brackets, printed with the table):
  dncnn     ConverseDnCNN (released configuration), gray, B16 128x128   [B4 64x64]
  dncnn_baseline  DnCNN (17 convs), the same shapes                       [B4 64x64]
  msrresnet ConverseMSRResNet x4, LR B16 32x32                           [B2 16x16]
  usrnet    ConverseUSRNet, B16 128x128 with per-sample 7x7 kernels       [B2 32x32]

``--cpu-allocator``: ``cache`` (default, what ``basicsr train`` sets up on the CPU: ``train: cpu_allocator``,
glibc keeps freed memory for the next step) or ``system`` (glibc's defaults: large tensors are mapped afresh
every step; the page faults and system time columns show the difference). ``--flush-denormal``: ``on``
(default, as ``train: flush_denormal: true``: the CPU treats denormals as zero) or ``off``.

``--source DIR`` times another checkout of this repository instead (its ``converse_plugin``; this script's
recipes, modes and timing), e.g. the baseline before the custom operator: ``git worktree add /tmp/f3cd289
f3cd289``, then ``--source /tmp/f3cd289 --modes eager --adam default``. Peak memory is then not measured
(older checkouts lack the memory profiler helper), and the JSON goes to ``train_step_<commit>_<device>.json``.

Modes: eager; compile (``torch.compile(model)`` with what ``train: compile: true`` adds: on the CPU inductor's
``aggressive_fusion``); bf16 (eager under ``torch.autocast`` bfloat16; Converse2D itself computes in float32);
checkpoint (eager with ``checkpoint_blocks=True``: blocks recomputed in backward).
"""
from __future__ import annotations

import argparse
import functools
import inspect
import os
import platform
import statistics
import sys
import time
from os import path as osp
from types import SimpleNamespace

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.memory import peak_bytes, write_report  # noqa: E402

RECIPES = {
    # name: (architecture, kwargs, channels, cuda (batch, size), cpu (batch, size), upscale, kernels)
    'dncnn': ('ConverseDnCNN', {}, 1, (16, 128), (4, 64), 1, False),
    'dncnn_baseline': ('DnCNN', {}, 1, (16, 128), (4, 64), 1, False),
    'msrresnet': ('ConverseMSRResNet', {'upscale': 4}, 3, (16, 32), (2, 16), 4, False),
    'usrnet': ('ConverseUSRNet', {}, 3, (16, 128), (2, 32), 1, True),
}
MODES = ('eager', 'compile', 'bf16', 'checkpoint')
ADAMS = ('auto', 'default', 'fused')


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def build(recipe: str, mode: str, device: str, batch: int, size: int, adam: str = 'auto'):
    """(model, step function) for one recipe and mode, or None when the mode does not apply."""
    import converse_plugin  # noqa: F401  (registers the architectures)
    from basicsr.utils.registry import ARCH_REGISTRY

    arch, kwargs, ch, _, _, up, kernels = RECIPES[recipe]
    cls = ARCH_REGISTRY.get(arch)
    kwargs = dict(kwargs)
    if mode == 'checkpoint':
        if 'checkpoint_blocks' not in inspect.signature(cls).parameters:
            return None
        kwargs['checkpoint_blocks'] = True
    torch.manual_seed(0)
    net = cls(**kwargs).to(device).train()
    # eager: the fused Adam kernel; compile: Adam's update compiled too (inductor fuses it; a fused or
    # foreach Adam in eager costs a few aten ops per parameter, which would dominate the compiled count)
    fused = {'auto': mode != 'compile', 'default': None, 'fused': True}[adam]
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=fused)
    x = torch.rand(batch, ch, size, size, device=device)
    gt = torch.rand(batch, ch, size * up, size * up, device=device)
    args = (x, )
    if kernels:
        k = torch.rand(batch, 1, 7, 7, device=device)
        args = (x, k / k.sum(dim=(-2, -1), keepdim=True))
    model = torch.compile(net, **train_compile_kwargs(device)) if mode == 'compile' else net
    opt_step = torch.compile(opt.step) if mode == 'compile' and adam == 'auto' else opt.step

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=mode == 'bf16'):
            out = model(*args)
        loss = (out.float() - gt).abs().mean()
        loss.backward()
        opt_step()
        opt.zero_grad(set_to_none=True)

    return net, step


def train_compile_kwargs(device: str) -> dict:
    """What ``train: compile: true`` passes to torch.compile on ``device``: the imported checkout's
    ``parse_compile``. A checkout without it, or with one that takes no device (older than the CPU inductor
    options), gets what it would have passed: nothing, or ``parse_compile(True)``."""
    try:
        from converse_plugin.models.training_speed import parse_compile
    except ImportError:
        return {}
    if 'device' not in inspect.signature(parse_compile).parameters:
        return parse_compile(True) or {}
    return parse_compile(True, torch.device(device)) or {}


def leaf_ops(step, device: str) -> tuple[int, int | None]:
    """(leaf aten ops, CUDA kernels or None) of one step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        sync(device)
    events = prof.events()

    def has_aten_below(e) -> bool:
        return any(c.name.startswith('aten::') or has_aten_below(c) for c in e.cpu_children)

    leaves = sum(1 for e in events if e.name.startswith('aten::') and e.device_type.name == 'CPU'
                 and not has_aten_below(e))
    kernels = None
    if device == 'cuda':
        kernels = sum(1 for e in events if e.device_type.name == 'CUDA')
    return leaves, kernels


BREAKDOWN = ('GEMM/conv', 'FFT', 'copies', 'fused kernels', 'other')


def category(name: str) -> str:
    """The :data:`BREAKDOWN` category of a profiler event name."""
    if name.startswith('aten::') and (name[6:] in ('mm', 'bmm', 'addmm', 'baddbmm', 'addbmm')
                                      or 'convolution' in name or 'conv2d' in name):  # _slow_conv2d_*: GEMMs
        return 'GEMM/conv'
    if name.startswith('aten::_fft_'):
        return 'FFT'
    if name in ('aten::copy_', 'aten::clone', 'aten::contiguous'):
        return 'copies'
    if 'CompiledFxGraph' in name or 'cpp_fused' in name:  # a graph call's self time is its fused kernels
        return 'fused kernels'
    return 'other'


def breakdown(step) -> dict:
    """ms of one step per :data:`BREAKDOWN` category, from the profiler's self CPU time (on the CPU: where
    the time goes; on CUDA the host side only)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    totals = dict.fromkeys(BREAKDOWN, 0.0)
    for avg in prof.key_averages():
        totals[category(avg.key)] += avg.self_cpu_time_total / 1e3
    return totals


def run(recipe: str, mode: str, device: str, batch: int, size: int, steps: int, warmup: int,
        memory: bool, with_breakdown: bool = False, adam: str = 'auto') -> dict | None:
    built = build(recipe, mode, device, batch, size, adam)
    if built is None:
        return None
    _, step = built
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    before = os_usage()
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    after = os_usage()
    ops, kernels = leaf_ops(step, device)
    peak = peak_bytes(step, device) if memory else None
    faults, sys_ms = ((after[0] - before[0]) / steps, (after[1] - before[1]) * 1e3 / steps) if before else (None, None)
    return {'ms_per_step': statistics.median(times) * 1e3, 'ms_all': [t * 1e3 for t in times],
            'leaf_aten_ops': ops, 'cuda_kernels': kernels, 'peak_bytes': peak,
            'page_faults_per_step': faults, 'system_ms_per_step': sys_ms,
            'breakdown_ms': breakdown(step) if with_breakdown else None}


def os_usage() -> tuple[int, float] | None:
    """(minor page faults, system CPU seconds) of this process so far, or None where ``resource`` is missing
    (Windows). Fresh pages the allocator maps for large tensors cost a fault each, and the kernel's time on
    them is system time: part of a step that the profiler does not show."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


@functools.lru_cache(maxsize=None)
def load_engine_module(name: str):
    """This checkout's ``converse_plugin/engine/<name>.py`` (``allocator``, ``denormals``: the CPU setup that
    ``basicsr train`` does), loaded from its file (no package import, so that ``--source`` still decides which
    converse_plugin the architectures come from)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'bench_engine_{name}', osp.join(REPO, 'converse_plugin', 'engine', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_cpu(device: str, allocator: str, flush_denormal: bool, note) -> tuple[str, bool]:
    """What ``basicsr train`` sets up for a run on ``device`` (``train: cpu_allocator`` and ``train:
    flush_denormal``), before any step; returns (the allocator in effect, whether denormals are flushed).
    ``note`` takes what the setup logs (e.g. a C library other than glibc)."""
    logger = SimpleNamespace(info=note, warning=note)
    cached = load_engine_module('allocator').setup_cpu_allocator(
        allocator, 'train:cpu_allocator', torch.device(device), note)
    flushed = load_engine_module('denormals').setup_flush_denormal({'flush_denormal': flush_denormal}, logger)
    return ('cache' if cached else 'system'), flushed


def use_source(source: str) -> str:
    """Make ``import converse_plugin`` load the checkout at ``source`` (before anything imported it); returns its
    commit (``git rev-parse --short HEAD``, or 'unknown')."""
    import subprocess
    if not osp.isfile(osp.join(source, 'converse_plugin', '__init__.py')):
        raise SystemExit(f'--source {source}: no converse_plugin/__init__.py there; expected a checkout of this '
                         'repository (e.g. `git worktree add /tmp/f3cd289 f3cd289`)')
    if 'converse_plugin' in sys.modules:
        raise SystemExit('--source: converse_plugin is already imported in this process')
    sys.path.insert(0, osp.abspath(source))
    rev = subprocess.run(['git', '-C', source, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True)
    return rev.stdout.strip() if rev.returncode == 0 and rev.stdout.strip() else 'unknown'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--recipes', nargs='+', default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=list(MODES))
    parser.add_argument('--adam', default='auto', choices=ADAMS,
                        help='auto: fused in eager, compiled with the model; default: torch.optim.Adam() as '
                             'basicsr train builds it; fused: Adam(fused=True)')
    parser.add_argument('--steps', type=int, default=5, help='timed steps (median)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (CPU)')
    parser.add_argument('--batch', type=int, default=None, help='override every recipe\'s batch size')
    parser.add_argument('--size', type=int, default=None, help='override every recipe\'s (LR) crop size')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--breakdown', action='store_true', help='profile one more step: time per category')
    parser.add_argument('--json', default=None, help='default benchmarks/results/train_step_<device>.json')
    parser.add_argument('--cpu-allocator', default='cache', choices=load_engine_module('allocator').CPU_ALLOCATORS,
                        help='cache: glibc keeps freed memory (as train: cpu_allocator: cache); system: its defaults')
    parser.add_argument('--flush-denormal', default='on', choices=('on', 'off'),
                        help='on: the CPU flushes denormals to zero (as train: flush_denormal: true); off: it does not')
    parser.add_argument('--source', default=None,
                        help="time another checkout of this repository (its converse_plugin); no peak memory")
    args = parser.parse_args(argv)
    source_rev = None
    if args.source:
        source_rev = use_source(args.source)
        args.no_memory = True
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
    notes: list[str] = []  # what the setup logs (e.g. a C library other than glibc)
    allocator, flushed = setup_cpu(args.device, args.cpu_allocator, args.flush_denormal == 'on', notes.append)
    machine = (torch.cuda.get_device_name() if args.device == 'cuda' else
               f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
               f'{torch.get_num_threads()} torch threads')
    code = f', code of {args.source} ({source_rev})' if args.source else ''
    print(f'# Training step on {args.device} ({machine}), torch {torch.__version__}, median of {args.steps}{code}, '
          f'CPU allocator {allocator}, denormals {"flushed" if flushed else "computed"}')
    for note in notes:
        print(f'# {note}')
    report = {'device': args.device, 'machine': machine, 'torch': torch.__version__, 'steps': args.steps,
              'adam': args.adam, 'source': args.source, 'source_commit': source_rev, 'cpu_allocator': allocator,
              'flush_denormal': flushed,
              'results': {}}
    name = f'train_step_{source_rev}' if source_rev else 'train_step'
    rows = []
    for recipe in args.recipes:
        arch, _, ch, cuda_shape, cpu_shape, up, _ = RECIPES[recipe]
        batch, size = cuda_shape if args.device == 'cuda' else cpu_shape
        batch, size = args.batch or batch, args.size or size
        shape = f'{arch} B{batch} {ch}x{size}x{size}' + (f' (x{up})' if up > 1 else '')
        print(f'{recipe}: {shape}', flush=True)
        for mode in args.modes:
            if recipe == 'dncnn_baseline' and mode == 'checkpoint':
                continue
            res = run(recipe, mode, args.device, batch, size, args.steps, args.warmup, not args.no_memory,
                      args.breakdown, args.adam)
            if res is None:
                print(f'  {mode}: not available', flush=True)
                continue
            res.update(recipe=recipe, mode=mode, arch=arch, batch=batch, size=size)
            report['results'][f'{recipe}|{mode}'] = res
            write_report(report, name, args.device, args.json, quiet=True)  # kept if a time limit stops the run
            print(f"  {mode}: {res['ms_per_step']:.1f} ms/step, {res['leaf_aten_ops']} leaf aten ops", flush=True)
            rows.append((shape, res))
    print('\n| recipe | mode | ms/step | peak MiB | leaf aten ops/step |' +
          (' CUDA kernels/step |' if args.device == 'cuda' else '') + ' page faults/step | system ms/step |')
    print('|---|---|---:|---:|---:|' + ('---:|' if args.device == 'cuda' else '') + '---:|---:|')
    for shape, res in rows:
        peak = f"{res['peak_bytes'] / 2**20:.0f}" if res['peak_bytes'] is not None else 'n/a'
        kernels = f" {res['cuda_kernels']} |" if args.device == 'cuda' else ''
        faults, sys_ms = res['page_faults_per_step'], res['system_ms_per_step']
        usage = f' {faults:.0f} | {sys_ms:.0f} |' if faults is not None else ' n/a | n/a |'
        print(f"| {shape} | {res['mode']} | {res['ms_per_step']:.1f} | {peak} | {res['leaf_aten_ops']} |{kernels}"
              + usage)
    if args.breakdown:
        print('\n| recipe | mode | profiled ms | ' + ' | '.join(BREAKDOWN) + ' |')
        print('|---|---|---:|' + '---:|' * len(BREAKDOWN))
        for shape, res in rows:
            parts = res['breakdown_ms']
            print(f"| {shape} | {res['mode']} | {sum(parts.values()):.0f} | "
                  + ' | '.join(f'{parts[k]:.0f}' for k in BREAKDOWN) + ' |')
    write_report(report, name, args.device, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
