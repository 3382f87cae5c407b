"""Run a corpus file through BasicSR's pipeline and the plugin's, and compare the two runs.

What is compared (CPU, fp32):

- the outcome: both runs succeed, or BasicSR fails and the plugin ends with exit status 2 and one line
  ``basicsr train|test: error: <file>: ...`` (no traceback);
- every logged step: iteration, epoch, learning rates and losses (1e-6 relative);
- every validation or test mean (per dataset and metric; 1e-4 absolute, 1e-6 relative);
- the files: the same checkpoint files, each with the same keys and the same tensors (1e-6 relative); a
  plugin training state may hold one more key, ``progress`` (the loop position for exact resume); the same
  saved images, pixel for pixel, and the same other files (logs excepted: their names carry the time).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from os import path as osp
from typing import Any

import cv2
import numpy as np
import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
RUNNER = osp.join(HERE, 'runner.py')
REL = 1e-6
DB = 1e-4
PLUGIN_STATE_KEYS = {'progress'}  # what the plugin adds to a training state (the loop position, exact resume)


@dataclass
class Run:
    root: str
    returncode: int
    output: str
    record: dict

    @property
    def error(self) -> dict | None:
        return self.record.get('error')


def run(which: str, phase: str, option_file: str, root: str, plugin_types: bool = False,
        flags: list[str] | None = None, timeout: float = 600, env: dict | None = None) -> Run:
    """Run ``option_file`` through ``which`` ('basicsr' or 'plugin') in a fresh process, cwd ``root``."""
    os.makedirs(root, exist_ok=True)
    record_file = osp.join(root, 'record.json')
    cmd = [sys.executable, RUNNER, which, phase, root, record_file, *(['--plugin-types'] if plugin_types else []),
           '--', '-opt', option_file, *(flags or [])]
    environ = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', **(env or {})}
    environ['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, environ.get('PYTHONPATH')) if p)
    proc = subprocess.run(cmd, cwd=root, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    record = {'steps': [], 'metrics': [], 'error': {'type': 'no record', 'message': proc.stdout[-2000:]}}
    if osp.isfile(record_file):
        with open(record_file, encoding='utf-8') as f:
            record = json.load(f)
        os.remove(record_file)
    return Run(root, proc.returncode, proc.stdout, record)


def _close(a: float, b: float, rel: float = REL, abs_: float = 0.0) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def compare_outcome(ref: Run, ours: Run) -> None:
    """Where BasicSR runs, the plugin runs; where BasicSR fails, the plugin ends with one clear line."""
    if ref.error is None:
        assert ours.error is None and ours.returncode == 0, (
            f'BasicSR ran this file, the plugin did not ({ours.error}):\n{ours.output[-3000:]}')
        return
    assert ours.returncode == 2, (f'BasicSR failed ({ref.error}); the plugin must end with exit status 2 and one '
                                  f'line, got {ours.returncode}:\n{ours.output[-3000:]}')
    assert 'Traceback' not in ours.output, f'the plugin printed a traceback:\n{ours.output[-3000:]}'
    errors = [line for line in ours.output.splitlines() if ': error: ' in line]
    assert len(errors) == 1 and errors[0].startswith(('basicsr train: error: ', 'basicsr test: error: ')), ours.output


def compare_steps(ref: Run, ours: Run) -> None:
    a, b = ref.record['steps'], ours.record['steps']
    assert [s.get('iter') for s in a] == [s.get('iter') for s in b], 'the logged iterations differ'
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys(), f"iteration {sa.get('iter')}: logged {sorted(sb)}, BasicSR {sorted(sa)}"
        for key, va in sa.items():
            vb = sb[key]
            if key == 'lrs':
                assert len(va) == len(vb) and all(_close(x, y) for x, y in zip(va, vb)), (key, va, vb)
            else:
                assert _close(va, vb), f"iteration {sa.get('iter')}: {key} {vb!r} here, {va!r} in BasicSR"


def compare_metrics(ref: Run, ours: Run) -> None:
    a, b = ref.record['metrics'], ours.record['metrics']
    assert [(m['iter'], m['dataset'], m['metric']) for m in a] == [(m['iter'], m['dataset'], m['metric']) for m in b]
    for ma, mb in zip(a, b):
        assert _close(ma['value'], mb['value'], abs_=DB), f"{ma}: {mb['value']} here"


def _files(root: str) -> dict[str, str]:
    """Relative path -> full path of every output file under experiments/ and results/ (logs excepted)."""
    out = {}
    for top in ('experiments', 'results'):
        for dirpath, _, names in os.walk(osp.join(root, top)):
            if osp.relpath(dirpath, root).startswith(osp.join('experiments', 'pretrained_models')):
                continue  # inputs (the VGG weights of perceptual losses), not outputs
            for name in names:
                if name.endswith('.log') or name == 'record.json':
                    continue
                full = osp.join(dirpath, name)
                out[osp.relpath(full, root)] = full
    return out


def _compare_tree(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=REL, atol=1e-7), f'{where}: max difference {(a - b).abs().max()}'
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f'{where}: keys {sorted(map(str, b))} vs {sorted(map(str, a))}'
        for key in a:
            _compare_tree(a[key], b[key], f'{where}:{key}')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _compare_tree(x, y, f'{where}[{i}]')
    elif isinstance(a, float):
        assert _close(a, b), f'{where}: {b} vs {a}'
    else:
        assert a == b, f'{where}: {b!r} vs {a!r}'


def compare_files(ref: Run, ours: Run) -> None:
    fa, fb = _files(ref.root), _files(ours.root)
    assert set(fa) == set(fb), (f'files only in BasicSR\'s run: {sorted(set(fa) - set(fb))}; '
                                f'only in the plugin\'s: {sorted(set(fb) - set(fa))}')
    for rel, pa in sorted(fa.items()):
        pb = fb[rel]
        if rel.endswith(('.pth', '.state')):
            a = torch.load(pa, map_location='cpu', weights_only=False)
            b = torch.load(pb, map_location='cpu', weights_only=False)
            if rel.endswith('.state'):
                extra = set(b) - set(a)
                assert extra <= PLUGIN_STATE_KEYS, f'{rel}: unexpected keys {sorted(extra)}'
                b = {k: v for k, v in b.items() if k in a}
            _compare_tree(a, b, rel)
        elif rel.endswith('.png'):
            ia, ib = cv2.imread(pa, cv2.IMREAD_UNCHANGED), cv2.imread(pb, cv2.IMREAD_UNCHANGED)
            assert ia.shape == ib.shape and np.array_equal(ia, ib), f'{rel}: the images differ'


def compare_runs(ref: Run, ours: Run) -> None:
    compare_outcome(ref, ours)
    if ref.error is None:
        compare_steps(ref, ours)
        compare_metrics(ref, ours)
        compare_files(ref, ours)
