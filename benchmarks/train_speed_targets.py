"""The training-speed targets ("Train at GPU speed") checked against the JSON reports of the two benchmarks.

    .venv/bin/python benchmarks/train_speed_targets.py [--train-step benchmarks/results/train_step_cuda.json]
        [--converse2d benchmarks/results/converse2d_cuda.json] [--strict]

Prints one Markdown row per target: what was measured, the limit, and whether it is met. A target whose
numbers are not in the reports (a mode or case that was not run) is listed as "not measured". ``--strict``
exits 1 when a measured target is missed (for scripts; the numbers are benchmarks, never test asserts).

Targets on CUDA (set for an H200), from ``bench_train_step.py --device cuda``:
  - ConverseDnCNN recipe step <= 60 ms (the fastest of the eager and compile modes);
  - the same with block checkpointing (mode ``checkpoint``) <= 8 GiB peak;
  - ConverseUSRNet <= 120 ms, ConverseMSRResNet <= 40 ms (fastest of eager and compile);
and from ``bench_converse2d.py --device cuda --cases train s2``:
  - the operator's forward + backward at the training shape within 2.5x of two rfft2 + irfft2 pairs;
  - s = 2: forward + backward faster than the direct formulation (the oracle, the authors' closed form).

On the CPU (``bench_train_step.py --device cpu --recipes dncnn --modes eager compile``):
  - compiled ConverseDnCNN step: at most a third of the leaf aten ops of the baseline eager step (the step
    before the custom operator, f3cd289: 13,131 at B4 64x64) and at least 1.5x faster than the eager step of
    the same report.
"""
from __future__ import annotations

import argparse
import json
import sys
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(REPO, 'benchmarks', 'results')
# one ConverseDnCNN eager step before the custom operator (f3cd289), B4 64x64, 1 thread, torch.profiler
BASELINE_EAGER_LEAF_OPS_CPU = 13131
BASELINE_CPU_SHAPE = (4, 64)  # (batch, crop size) of that count: bench_train_step.py's CPU default
GIB = 2 ** 30


def row(target: str, measured: str | None, limit: str, met: bool | None) -> dict:
    return {'target': target, 'measured': measured if measured is not None else 'not measured', 'limit': limit,
            'met': met}


def fastest(results: dict, recipe: str, modes=('eager', 'compile')) -> tuple[float, str] | None:
    """(ms/step, mode) of the fastest of ``modes`` measured for ``recipe``, or None."""
    found = [(results[f'{recipe}|{m}']['ms_per_step'], m) for m in modes if f'{recipe}|{m}' in results]
    return min(found) if found else None


def step_targets(report: dict) -> list[dict]:
    results = report.get('results', {})
    rows = []
    if report.get('device') == 'cuda':
        for recipe, name, limit in (('dncnn', 'ConverseDnCNN', 60.0), ('usrnet', 'ConverseUSRNet', 120.0),
                                    ('msrresnet', 'ConverseMSRResNet', 40.0)):
            best = fastest(results, recipe)
            rows.append(row(f'{name} training step', None if best is None else f'{best[0]:.1f} ms ({best[1]})',
                            f'<= {limit:g} ms', None if best is None else best[0] <= limit))
        ckpt = results.get('dncnn|checkpoint', {})
        peak = ckpt.get('peak_bytes')
        rows.append(row('ConverseDnCNN step with checkpoint_blocks, peak memory',
                        None if peak is None else f'{peak / GIB:.2f} GiB ({ckpt["ms_per_step"]:.1f} ms)', '<= 8 GiB',
                        None if peak is None else peak <= 8 * GIB))
        return rows
    eager, compiled = results.get('dncnn|eager'), results.get('dncnn|compile')
    ops = None if compiled is None else compiled['leaf_aten_ops']
    shape = None if compiled is None else (compiled.get('batch'), compiled.get('size'))
    if ops is not None and shape != BASELINE_CPU_SHAPE:  # the baseline counted B4 64x64: another shape is no verdict
        (b, n), (ib, i_n) = shape, BASELINE_CPU_SHAPE
        measured, met = f'{ops:,} at B{b} {n}x{n} (the count is for B{ib} {i_n}x{i_n})', None
    else:
        measured, met = (None, None) if ops is None else (f'{ops:,}', ops <= BASELINE_EAGER_LEAF_OPS_CPU / 3)
    rows.append(row('compiled ConverseDnCNN step, leaf aten ops', measured,
                    f'<= {BASELINE_EAGER_LEAF_OPS_CPU // 3:,} (a third of {BASELINE_EAGER_LEAF_OPS_CPU:,})', met))
    speedup = None if eager is None or compiled is None else eager['ms_per_step'] / compiled['ms_per_step']
    rows.append(row('compiled ConverseDnCNN step against eager', None if speedup is None else f'{speedup:.2f}x',
                    '>= 1.5x', None if speedup is None else speedup >= 1.5))
    return rows


def operator_targets(report: dict) -> list[dict]:
    cases = report.get('cases', {})
    rows = []
    train = cases.get('train', {}).get('times_s')
    ratio = None if train is None else (train['production|forward+backward']
                                        / (2 * (train['rfft2|floor'] + train['irfft2|floor'])))
    rows.append(row('Converse2D forward+backward, B16 C64 128² k7, against two rfft2+irfft2 pairs',
                    None if ratio is None else f'{ratio:.2f}x ({train["production|forward+backward"] * 1e3:.2f} ms)',
                    '<= 2.5x', None if ratio is None else ratio <= 2.5))
    s2 = cases.get('s2', {}).get('times_s')
    measured = met = None
    if s2:
        prod, direct = s2['production|forward+backward'], s2['oracle|forward+backward']
        measured, met = f'{prod * 1e3:.2f} ms against {direct * 1e3:.2f} ms', prod < direct
    rows.append(row('Converse2D s=2 forward+backward against the direct formulation', measured, 'faster', met))
    return rows


def load(files: list[str] | None, default: str) -> dict | None:
    """The report in ``files`` (default ``benchmarks/results/<default>``; several: their ``results`` merged, a
    later file's entry winning), or None where none exists. A named file that is missing or not JSON is an
    error naming it."""
    if files is None:
        files = [osp.join(RESULTS, default)]
        if not osp.isfile(files[0]):
            return None
    report = None
    for file in files:
        try:
            with open(file, encoding='utf-8') as f:
                part = json.load(f)
        except OSError as err:
            raise SystemExit(f'{file}: cannot read the benchmark report ({err.strerror})') from None
        except json.JSONDecodeError as err:
            raise SystemExit(f'{file}: not a benchmark report (invalid JSON: {err})') from None
        if not isinstance(part, dict):
            raise SystemExit(f'{file}: not a benchmark report (expected a JSON object)')
        if report is None:
            report = part
        else:
            report.setdefault('results', {}).update(part.get('results', {}))
            report.setdefault('cases', {}).update(part.get('cases', {}))
    return report


def markdown(rows: list[dict], title: str) -> str:
    lines = [f'## {title}', '', '| target | measured | limit | met |', '|---|---|---|---|']
    for r in rows:
        met = {True: 'yes', False: '**no**', None: '-'}[r['met']]
        lines.append(f"| {r['target']} | {r['measured']} | {r['limit']} | {met} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', choices=('cpu', 'cuda'),
                        help='which reports to read by default (train_step_<device>.json, converse2d_<device>.json)')
    parser.add_argument('--train-step', nargs='+', default=None,
                        help='bench_train_step.py JSON file(s); several are merged (e.g. eager and compile runs)')
    parser.add_argument('--converse2d', default=None, help='bench_converse2d.py JSON')
    parser.add_argument('--strict', action='store_true', help='exit 1 when a measured target is missed')
    args = parser.parse_args(argv)
    rows = []
    step = load(args.train_step, f'train_step_{args.device}.json')
    op = load(args.converse2d and [args.converse2d], f'converse2d_{args.device}.json')
    for report, targets, title in ((step, step_targets, 'Training step'), (op, operator_targets, 'Operator')):
        if report is not None:
            found = targets(report)
            print(('\n' if rows else '') + markdown(found, f"{title} ({report.get('device')}, {report.get('machine')})"))
            rows += found
    if step is None and op is None:
        raise SystemExit('no report found: run benchmarks/bench_train_step.py and benchmarks/bench_converse2d.py '
                         'first, or name their JSON files with --train-step and --converse2d')
    missed = [r['target'] for r in rows if r['met'] is False]
    met = sum(r['met'] is True for r in rows)
    print(f"\nmet {met}, missed {len(missed)}, not measured {len(rows) - met - len(missed)}"
          + (f": missed {'; '.join(missed)}" if missed else ''))
    return 1 if args.strict and missed else 0


if __name__ == '__main__':
    sys.exit(main())
