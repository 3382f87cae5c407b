"""Stress the fault handling of multi-agent training: every fault case of ``tests/e2e/faults.py``, repeated.

Two torchrun agents on this host (gloo, c10d rendezvous, ``--max-restarts 1``,
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, ``dist_params: timeout`` of 15 s) train a tiny ConverseDnCNN for 10
iterations; one fault is injected per run at iteration 5 (or in the save of iteration 4). Prints the table of
outcomes (kept in docs/distributed.md) and writes every run's outcome as JSON lines.

    OMP_NUM_THREADS=1 python benchmarks/dist_faults.py --repeat 10 [--case NAME ...] [--jsonl out.jsonl]

An acceptable outcome is ``finished`` (the final weights equal the uninterrupted run's) or, where recovery is
impossible, ``stopped`` (every surviving process ended within the bound with one line and the resume command;
the resumed run ends with the uninterrupted run's weights). Exit status 1 if any run had another outcome.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.e2e.faults import CASES, STOP_BOUND, prepare, reference_weights, run_case  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--case', action='append', choices=sorted(CASES), help='default: every case')
    parser.add_argument('--jsonl', help='append every run as a JSON line here')
    parser.add_argument('--keep', help='work in this folder (default: a temporary one)')
    args = parser.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    cases = args.case or list(CASES)
    folder = args.keep or tempfile.mkdtemp(prefix='dist_faults_')
    os.makedirs(folder, exist_ok=True)
    data = prepare(folder)
    reference = reference_weights(folder, data)
    table: dict[str, Counter] = {case: Counter() for case in cases}
    times: dict[str, list[float]] = {case: [] for case in cases}
    bad = 0
    for attempt in range(args.repeat):
        for case in cases:
            outcome = run_case(case, folder, data, reference, tag=f'{attempt}_{sorted(CASES).index(case)}')
            table[case][outcome.outcome] += 1
            times[case].append(outcome.seconds)
            ok = outcome.outcome in CASES[case][2]
            bad += not ok
            print(f'{attempt + 1:>3} {case:<45} {outcome.outcome:<9} {outcome.seconds:6.1f} s '
                  f'exit {outcome.codes}{"" if ok else "  <- " + outcome.detail[-300:]}', flush=True)
            if args.jsonl:
                with open(args.jsonl, 'a', encoding='utf-8') as f:
                    f.write(json.dumps({'case': case, 'attempt': attempt, 'outcome': outcome.outcome,
                                        'seconds': round(outcome.seconds, 1), 'codes': outcome.codes,
                                        'detail': outcome.detail[-500:]}) + '\n')
    print(f'\n| case | runs | outcomes | acceptable | median s | max s |\n|---|---|---|---|---|---|')
    for case in cases:
        outcomes = ', '.join(f'{k} {v}' for k, v in sorted(table[case].items()))
        spans = sorted(times[case])
        print(f'| {case} | {sum(table[case].values())} | {outcomes} | {" or ".join(CASES[case][2])} | '
              f'{spans[len(spans) // 2]:.0f} | {spans[-1]:.0f} |')
    print(f'\nbound for the survivors of an unrecoverable fault: {STOP_BOUND} s after the fault; '
          f'{bad} unacceptable run(s)')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
