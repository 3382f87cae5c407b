"""Speed and memory of Converse2D: the production operator against the direct closed form (the test
oracle, ``tests/ops/oracle.py``) and against a depthwise Conv2d / ConvTranspose2d of the same size.

    .venv/bin/python benchmarks/bench_converse2d.py [--device cpu|cuda] [--repeat 7] [--threads N]
                                                    [--json benchmarks/results/converse2d_cpu.json]

Prints one table per case and writes every number to JSON. Times are medians over ``--repeat`` runs
after one warm-up; all implementations of a case are timed in the same process, interleaved.

Cases:
  s1      ConverseDnCNN's layer: B=1, C=128, 256x256, k=7, padding 6, circular, s=1
  s2      the SR up-layer: B=1, C=64, 64x64, k=2, padding 2, replicate, s=2
  batch   a training batch: B=16, C=128, 48x48 crops, k=7, padding 6, circular, s=1
  train   ConverseDnCNN's training shape (training-speed target): B=16, C=64, 128x128, k=7, padding 6, circular, s=1
  model   ConverseDnCNN (released configuration) on a 256x256 gray image, eval mode

Every case also compares the production operator with the FFT floor: one ``rfft2`` + ``irfft2`` of the padded
(and upsampled) input. The training-speed target: forward + backward within 2.5x of two such pairs.

Peak memory of forward + backward: tensor memory allocated during one step, over what existed before
it (CUDA: ``torch.cuda.max_memory_allocated``; CPU: PyTorch's memory profiler).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.memory import peak_bytes, write_report  # noqa: E402
from converse_plugin.ops import Converse2D  # noqa: E402
from tests.ops.oracle import oracle_module_forward  # noqa: E402

CASES = {
    's1': dict(batch=1, channels=128, size=256, kernel_size=7, padding=6, padding_mode='circular', scale=1),
    's2': dict(batch=1, channels=64, size=64, kernel_size=2, padding=2, padding_mode='replicate', scale=2),
    'batch': dict(batch=16, channels=128, size=48, kernel_size=7, padding=6, padding_mode='circular', scale=1),
    'train': dict(batch=16, channels=64, size=128, kernel_size=7, padding=6, padding_mode='circular', scale=1),
}
IMPLS = ('production', 'oracle', 'dw_conv', 'dw_convT')


class OracleConverse2D(Converse2D):
    """Same parameters, forward through the direct closed form."""

    def forward(self, x):
        return oracle_module_forward(self, x)


def make_layer(impl: str, case: dict) -> nn.Module:
    c, k, s = case['channels'], case['kernel_size'], case['scale']
    if impl in ('production', 'oracle'):
        cls = Converse2D if impl == 'production' else OracleConverse2D
        return cls(c, c, k, scale=s, padding=case['padding'], padding_mode=case['padding_mode'])
    if impl == 'dw_conv':  # same kernel, output size of the input (an upscaling conv has no depthwise twin)
        return nn.Conv2d(c, c, k, padding='same', groups=c)
    return nn.ConvTranspose2d(c, c, k, stride=s, padding=(k - s) // 2, groups=c)


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_case(case: dict, device: str, repeat: int) -> dict:
    """Median seconds per implementation and mode (train-mode forward, forward + backward, eval forward)."""
    shape = (case['batch'], case['channels'], case['size'], case['size'])
    x = torch.rand(*shape, device=device)
    layers = {impl: make_layer(impl, case).to(device) for impl in IMPLS}
    layers['oracle'].load_state_dict(layers['production'].state_dict())

    def fwd(layer):
        layer.train()
        return lambda: layer(x)

    def fwd_bwd(layer):
        layer.train()
        xg = x.clone().requires_grad_(True)
        return lambda: layer(xg).sum().backward()

    def eval_fwd(layer):
        def run():
            layer.eval()
            with torch.no_grad():
                layer(x)
        return run

    padded = (case['size'] + 2 * case['padding']) * case['scale']
    z = torch.rand(case['batch'], case['channels'], padded, padded, device=device)
    zf = torch.fft.rfft2(z)
    floor = {'rfft2': lambda: torch.fft.rfft2(z), 'irfft2': lambda: torch.fft.irfft2(zf, s=z.shape[-2:])}

    jobs = {(impl, mode): make(layer) for impl, layer in layers.items()
            for mode, make in (('forward', fwd), ('forward+backward', fwd_bwd), ('eval forward', eval_fwd))}
    jobs.update({(name, 'floor'): fn for name, fn in floor.items()})
    samples = {key: [] for key in jobs}
    for key, fn in jobs.items():  # warm-up (plans, caches)
        fn()
    for _ in range(repeat):
        for key, fn in jobs.items():
            samples[key].append(timed(fn, device))
    return {f'{impl}|{mode}': statistics.median(v) for (impl, mode), v in samples.items()}


def bench_model(device: str, repeat: int) -> dict:
    from basicsr.archs import build_network

    net = build_network({'type': 'ConverseDnCNN'}).to(device).eval()
    x = torch.rand(1, 1, 256, 256, device=device)
    results = {}
    for impl in ('production', 'oracle'):
        with oracle_operator(impl == 'oracle'), torch.no_grad():
            net(x)
            results[f'{impl}|eval forward'] = statistics.median(timed(lambda: net(x), device) for _ in range(repeat))
    return results


@contextmanager
def oracle_operator(enabled: bool):
    original = Converse2D.forward
    if enabled:
        Converse2D.forward = OracleConverse2D.forward
    try:
        yield
    finally:
        Converse2D.forward = original


def peak_memory(case_name: str, impl: str, device: str) -> int:
    """Peak bytes of tensor memory of one forward + backward (see :func:`benchmarks.memory.peak_bytes`)."""
    case = CASES[case_name]
    layer = make_layer(impl, case).to(device).train()
    x = torch.rand(case['batch'], case['channels'], case['size'], case['size'], device=device, requires_grad=True)
    layer(x).sum().backward()  # warm-up outside the measurement
    x.grad = None
    layer.zero_grad(set_to_none=True)
    return peak_bytes(lambda: layer(x).sum().backward(), device)


def ms(seconds: float) -> str:
    return f'{seconds * 1e3:10.1f}'


def print_case(name: str, case: dict, times: dict, memory: dict) -> None:
    print(f"\n## {name}: B={case['batch']} C={case['channels']} {case['size']}x{case['size']} "
          f"k={case['kernel_size']} p={case['padding']} {case['padding_mode']} s={case['scale']}")
    print(f"| {'implementation':<12} | {'forward ms':>10} | {'fwd+bwd ms':>10} | {'eval fwd ms':>11} | "
          f"{'peak MiB':>9} |")
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 12}|{'-' * 13}|{'-' * 11}|")
    for impl in IMPLS:
        mem = memory.get(impl)
        print(f"| {impl:<12} | {ms(times[f'{impl}|forward'])} | {ms(times[f'{impl}|forward+backward'])} | "
              f"{ms(times[f'{impl}|eval forward']):>11} | {mem / 2**20 if mem is not None else float('nan'):9.1f} |")
    prod, orc = (lambda m: times[f'production|{m}']), (lambda m: times[f'oracle|{m}'])
    floor = times['rfft2|floor'] + times['irfft2|floor']
    print(f"speed-up over the oracle: forward {orc('forward') / prod('forward'):.2f}x, "
          f"forward+backward {orc('forward+backward') / prod('forward+backward'):.2f}x, "
          f"eval {orc('eval forward') / prod('eval forward'):.2f}x")
    if memory.get('oracle') and memory.get('production') is not None:
        print(f"peak memory of forward+backward: {memory['production'] / memory['oracle']:.2f}x the oracle's")
    print(f"FFT floor (rfft2 {ms(times['rfft2|floor']).strip()} ms + irfft2 {ms(times['irfft2|floor']).strip()} ms): "
          f"production eval forward = {prod('eval forward') / floor:.2f}x the floor, "
          f"forward+backward = {prod('forward+backward') / (2 * floor):.2f}x two floors")


def print_markdown(report: dict) -> None:
    """All cases as one Markdown table (the README's layout), then one summary line per case."""
    print('\n| case | implementation | forward ms | fwd+bwd ms | eval fwd ms | peak MiB (fwd+bwd) |')
    print('|---|---|---:|---:|---:|---:|')
    lines = []
    for name, result in report['cases'].items():
        if name == 'model':
            t = result['times_s']
            lines.append(f"- whole ConverseDnCNN (released configuration), 1×1×256×256, eval: "
                         f"{t['production|eval forward']:.1f} s against {t['oracle|eval forward']:.1f} s with the "
                         f"oracle operator: {result['speedup_eval']:.2f}×")
            continue
        c, t, mem = result['config'], result['times_s'], result['peak_bytes_forward_backward']
        label = (f"{name}: B={c['batch']} C={c['channels']} {c['size']}² k={c['kernel_size']} p={c['padding']} "
                 f"s={c['scale']}")
        for i, impl in enumerate(IMPLS):
            peak = f'{mem[impl] / 2**20:.0f}' if mem.get(impl) is not None else 'n/a'
            print(f"| {label if i == 0 else ''} | {impl} | {t[f'{impl}|forward'] * 1e3:.1f} | "
                  f"{t[f'{impl}|forward+backward'] * 1e3:.1f} | {t[f'{impl}|eval forward'] * 1e3:.1f} | {peak} |")
        ratio = (lambda m: t[f'oracle|{m}'] / t[f'production|{m}'])
        floor = t['rfft2|floor'] + t['irfft2|floor']
        memory = (f"; peak memory {mem['production'] / mem['oracle']:.2f}× the oracle's"
                  if mem.get('oracle') and mem.get('production') is not None else '')
        lines.append(f"- {name}: speed-up over the oracle forward {ratio('forward'):.2f}×, forward+backward "
                     f"{ratio('forward+backward'):.2f}×, eval {ratio('eval forward'):.2f}×; eval forward = "
                     f"{t['production|eval forward'] / floor:.2f}× (rfft2 + irfft2), forward+backward = "
                     f"{t['production|forward+backward'] / (2 * floor):.2f}× two (rfft2 + irfft2){memory}")
    print('\n' + '\n'.join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    parser.add_argument('--cases', nargs='+', default=[*CASES, 'model'], choices=[*CASES, 'model'])
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--json', default=None, help='where to write the results (default benchmarks/results/)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    machine = (torch.cuda.get_device_name() if args.device == 'cuda' else
               f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
               f'{torch.get_num_threads()} torch threads')
    print(f'# Converse2D benchmark on {args.device} ({machine}), torch {torch.__version__}, '
          f'median of {args.repeat}')
    report = {'device': args.device, 'machine': machine, 'torch': torch.__version__, 'repeat': args.repeat,
              'cases': {}}
    for name in args.cases:
        if name == 'model':
            times = bench_model(args.device, args.repeat)
            speedup = times['oracle|eval forward'] / times['production|eval forward']
            print(f"\n## model: ConverseDnCNN 1x1x256x256 eval: production {ms(times['production|eval forward']).strip()}"
                  f" ms, oracle {ms(times['oracle|eval forward']).strip()} ms, speed-up {speedup:.2f}x")
            report['cases'][name] = {'times_s': times, 'speedup_eval': speedup}
            write_report(report, 'converse2d', args.device, args.json, quiet=True)
            continue
        case = CASES[name]
        times = bench_case(case, args.device, args.repeat)
        memory = {} if args.no_memory else {impl: peak_memory(name, impl, args.device) for impl in IMPLS}
        print_case(name, case, times, memory)
        report['cases'][name] = {'config': case, 'times_s': times, 'peak_bytes_forward_backward': memory}
        write_report(report, 'converse2d', args.device, args.json, quiet=True)
    print_markdown(report)
    write_report(report, 'converse2d', args.device, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
