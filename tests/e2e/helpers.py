"""Shared pieces of the end-to-end tests: running the CLI in a subprocess, tiny data, reading logs."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from os import path as osp

import cv2
import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SHARED = osp.join(osp.dirname(REPO), 'shared')
OPTIONS = osp.join(REPO, 'options')

needs_shared = pytest.mark.skipif(
    not osp.isdir(SHARED), reason=f'needs the shared data and checkpoints at {SHARED} (../shared from the repo root)')


def train_options(name: str) -> str:
    return osp.join(OPTIONS, 'train', name)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one, with ``extra``, one thread per process unless ``extra``
    says otherwise (with 2 threads on a 2-core machine that other work shares, steps can be many times slower
    than with one), unbuffered output and this checkout first on PYTHONPATH."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', **extra}
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
    return env


def run_together(commands: list[tuple[list[str], dict[str, str]]], cwd: str,
                 timeout: float) -> list[subprocess.CompletedProcess]:
    """Start every ``(argv, env)`` at once (the ranks of one distributed run) and wait for all of them, at
    most ``timeout`` seconds in total; stdout and stderr together in ``.stdout``. On a timeout (or any error)
    every process is killed, so a test never leaves ranks behind."""
    import time

    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in commands]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out))
    finally:
        for proc in procs:
            proc.kill()
    return results


def run_cli(args: list[str], cwd: str, timeout: float = 300, script: str | None = None,
            launcher: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m converse_plugin ARGS`` (or ``python SCRIPT ARGS``, or ``LAUNCHER ARGS``) in ``cwd``
    with ``env`` added to the environment; stdout and stderr together in ``.stdout``."""
    env = cli_env(**(env or {}))
    if launcher is not None:
        cmd = [*launcher, *args]
    elif script is not None:
        cmd = [sys.executable, script, *args]
    else:
        cmd = [sys.executable, '-m', 'converse_plugin', *args]
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def check_ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f'exit status {proc.returncode}; output tail:\n{proc.stdout[-4000:]}'
    return proc.stdout


def make_images(folder: str, n: int = 4, size: int = 48, seed: int = 0) -> str:
    """``n`` smooth-plus-texture RGB PNGs of ``size`` x ``size`` (as gray they are still images)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    for i in range(n):
        base = 128 + 60 * np.sin(x / (3 + i)) + 50 * np.cos(y / (4 + i)) + rng.normal(0, 6, (size, size))
        img = np.dstack([base, np.roll(base, 3, 0), np.roll(base, 5, 1)]).clip(0, 255).astype(np.uint8)
        cv2.imwrite(osp.join(folder, f'img{i}.png'), img)
    return folder


def make_kernel(path: str, size: int = 7) -> str:
    """A normalised separable Hann blur kernel saved as ``.npy``."""
    w = np.hanning(size + 2)[1:-1]
    k = np.outer(w, w)
    np.save(path, k / k.sum())
    return path


def tiny_overrides(**extra: object) -> list[str]:
    """``--force_yml`` entries that shrink a shipped GPU training file to a few CPU iterations."""
    base = {
        'datasets:train:num_worker_per_gpu': 0,
        'datasets:train:batch_size_per_gpu': 2,
        'datasets:train:dataset_enlarge_ratio': 1,
        'datasets:train:gt_size': 32,
        'network_g:num_feat': 8,
        'network_g:num_block': 1,
        'train:total_iter': 4,
        'val:val_freq': 2,
        'logger:print_freq': 1,
        'logger:save_checkpoint_freq': 2,
        'logger:use_tb_logger': False,
    }
    base.update(extra)
    return [f'{k}={_yaml_scalar(v)}' for k, v in base.items()]


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return '~'
    return str(value)


def experiment_log(root: str, name: str, kind: str = 'train') -> str:
    """Text of the newest ``<kind>_<name>_*.log`` under ``root/experiments/<name>`` (train) or
    ``root/results/<name>`` (test)."""
    folder = osp.join(root, 'experiments' if kind == 'train' else 'results', name)
    logs = sorted(glob.glob(osp.join(folder, f'{kind}_{name}_*.log')))
    assert logs, f'no {kind} log in {folder}'
    with open(logs[-1], encoding='utf-8') as f:
        return f.read()


def validation_values(log: str, dataset: str, metric: str) -> list[float]:
    """Every ``# metric: value`` of BasicSR's ``Validation <dataset>`` blocks in ``log``, in order."""
    pattern = re.compile(rf'Validation {re.escape(dataset)}\n(?:\t # .*\n)*?\t # {metric}: (-?[\d.]+|inf|nan)')
    return [float(v) for v in pattern.findall(log)]
