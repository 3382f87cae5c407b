"""``basicsr test`` with the released checkpoints and the shipped test option files, pointed at
../shared with ``--force_yml``: per-image PSNR within 0.01 dB of ../shared/reference/RESULTS.md.

Each image's PSNR is recomputed from the image BasicSR saved (``save_img: true``) with the option
file's metric, and their mean must equal the mean BasicSR logged. By default everything runs: all of
Set12 (and the published mean, 30.70 dB), Set5 x4, the DnCNN baseline (Set12 mean 30.43 dB) and both
deblurring checkpoints on the B100_deblur5 images with kernel 1 (the longest: a few minutes each on two
CPU cores). ``CONVERSE_E2E_QUICK=1`` runs Set12 images 01 and 02 and Set5 only, for a fast local loop.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from os import path as osp

import cv2
import numpy as np
import pytest
import yaml

from converse_plugin.metrics.psnr_ssim import calculate_psnr_y_matlab  # first: it patches BasicSR's imports
from converse_plugin.engine.options import load_options
from basicsr.metrics import calculate_psnr, calculate_ssim  # noqa: E402  isort: skip
from tests.e2e.helpers import OPTIONS, SHARED, check_ok, experiment_log, needs_shared, run_cli, validation_values

pytestmark = pytest.mark.reproduction

FULL = os.environ.get('CONVERSE_E2E_QUICK') != '1'
full_only = pytest.mark.skipif(not FULL, reason='CONVERSE_E2E_QUICK=1: the long reproduction tests are skipped')
TOL_DB = 0.01 + 1e-9  # the reference values are rounded to 0.01 dB
# One inference process at a time runs while pytest waits: it gets every core (at most 4), not cli_env's one
# (`basicsr test` itself keeps freed memory in the process on the CPU: val:cpu_allocator's default).
REPRO_ENV = {'OMP_NUM_THREADS': str(max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                                               else os.cpu_count() or 1)))}


def reference(marker: str, label: str) -> dict[str, tuple[float, float | None]]:
    """Per-image (PSNR, SSIM or None) listed in RESULTS.md after ``marker``, up to 'mean' or the end of
    the list (';' or a full stop at the end of a line); ``label`` is the regex of an image name."""
    with open(osp.join(SHARED, 'reference', 'RESULTS.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index(marker)
    end = start + re.search(r'mean|;|\.\s*\n', text[start:]).start()
    values = {name: (float(p), float(s) if s else None)
              for name, p, s in re.findall(rf'\b({label}) (\d+\.\d+)(?:/(\d\.\d+))?', text[start:end])}
    assert values, f'no per-image values after {marker!r} in RESULTS.md'
    return values


def run_test(tmp_path, option_file: str, checkpoint: str, dataroot: str, *force: str) -> tuple[str, str]:
    name = osp.splitext(osp.basename(option_file))[0]
    root = str(tmp_path / 'root')
    proc = run_cli(['test', '-opt', osp.join(OPTIONS, 'test', option_file), '--root', root, '--force_yml',
                    f'path:pretrain_network_g={osp.join(SHARED, "zoo", checkpoint)}',
                    f'datasets:test_1:dataroot_gt={dataroot}', 'val:pbar=false', *force],
                   cwd=str(tmp_path), timeout=1800, env=REPRO_ENV)
    check_ok(proc)
    return experiment_log(root, name, kind='test'), osp.join(root, 'results', name, 'visualization')


@needs_shared
def test_converse_dncnn_set12_sigma25(tmp_path):
    ref = reference('Measured with converse_dncnn.pth on Set12', r'\d\d')
    names = sorted(ref) if FULL else ['01', '02']
    data = tmp_path / 'Set12'
    data.mkdir()
    for n in names:
        shutil.copy(osp.join(SHARED, 'data', 'Set12', f'{n}.png'), data)

    log, vis = run_test(tmp_path, 'test_ConverseDnCNN_Set12_sigma25.yml', 'converse_dncnn.pth', str(data))
    name = 'test_ConverseDnCNN_Set12_sigma25'
    psnrs, ssims = [], []
    for n in names:
        out = cv2.imread(osp.join(vis, 'Set12', f'{n}_{name}.png'), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(osp.join(data, f'{n}.png'), cv2.IMREAD_UNCHANGED)
        psnrs.append(calculate_psnr(out, gt, crop_border=0))
        ssims.append(calculate_ssim(out, gt, crop_border=0))
        assert abs(psnrs[-1] - ref[n][0]) <= TOL_DB, f'{n}: PSNR {psnrs[-1]:.4f}, RESULTS.md {ref[n][0]}'
        assert abs(ssims[-1] - ref[n][1]) <= 1e-4 + 1e-9, f'{n}: SSIM {ssims[-1]:.5f}, RESULTS.md {ref[n][1]}'
    [logged] = validation_values(log, 'Set12', 'psnr')
    assert logged == pytest.approx(np.mean(psnrs), abs=1e-4)
    if FULL:
        assert abs(logged - 30.70) <= 0.005, f'Set12 mean {logged:.4f}, published 30.70'


@needs_shared
def test_converse_msrresnet_x4_set5(tmp_path):
    ref = reference('Measured with converse_srresnet.pth', r'[a-z]+')
    log, vis = run_test(tmp_path, 'test_ConverseMSRResNet_x4_Set5.yml', 'converse_srresnet.pth',
                        osp.join(SHARED, 'data', 'Set5', 'HR'))
    name = 'test_ConverseMSRResNet_x4_Set5'
    psnrs = []
    for n, (ref_psnr, _) in sorted(ref.items()):
        out = cv2.imread(osp.join(vis, 'Set5', f'{n}_{name}.png'))
        hr = cv2.imread(osp.join(SHARED, 'data', 'Set5', 'HR', f'{n}.png'))
        hr = hr[:hr.shape[0] - hr.shape[0] % 4, :hr.shape[1] - hr.shape[1] % 4]
        psnrs.append(calculate_psnr_y_matlab(out, hr, crop_border=4))
        assert abs(psnrs[-1] - ref_psnr) <= TOL_DB, f'{n}: Y PSNR {psnrs[-1]:.4f}, RESULTS.md {ref_psnr}'
    assert len(psnrs) == 5
    [logged] = validation_values(log, 'Set5', 'psnr')
    assert logged == pytest.approx(np.mean(psnrs), abs=1e-4)
    assert abs(logged - 32.25) <= 0.005, f'Set5 mean Y PSNR {logged:.4f}, published 32.25'


@needs_shared
@full_only
def test_dncnn_baseline_set12_sigma25(tmp_path):
    log, _ = run_test(tmp_path, 'test_DnCNN_Set12_sigma25.yml', 'kair_dncnn_sigma25.pth',
                      osp.join(SHARED, 'data', 'Set12'), 'val:save_img=false')
    [logged] = validation_values(log, 'Set12', 'psnr')
    assert abs(logged - 30.43) <= 0.005, f'DnCNN Set12 mean {logged:.4f}, published 30.43'


@needs_shared
@full_only
@pytest.mark.parametrize('model, checkpoint', [('ConverseUSRNet', 'converse_usrnet.pth'),
                                               ('ConverseNet', 'conversenet.pth')])
def test_deblurring_b100_kernel_1(tmp_path, model, checkpoint):
    ref = reference(f'{checkpoint} 101085', r'\d{6}')
    name = f'test_{model}_B100_deblur5'
    opt = load_options(osp.join(OPTIONS, 'test', f'{name}.yml'))
    opt['datasets'] = {'test_1': dict(opt['datasets']['test_1'], kernels=osp.join(SHARED, 'data', 'kernels',
                                                                                    'kernel_1.npy'))}
    option_file = tmp_path / f'{name}.yml'  # kernel 1 only: the per-image references are for kernel 1
    option_file.write_text(yaml.safe_dump(json.loads(json.dumps(opt)), sort_keys=False))
    log, vis = run_test(tmp_path, str(option_file), checkpoint, osp.join(SHARED, 'data', 'B100_deblur5'))
    assert len(ref) >= 4
    for n, (ref_psnr, _) in ref.items():
        out = cv2.imread(osp.join(vis, 'B100_k1', f'{n}_k1_{name}.png'))
        gt = cv2.imread(osp.join(SHARED, 'data', 'B100_deblur5', f'{n}.png'))
        gt = gt[:gt.shape[0] - gt.shape[0] % 8, :gt.shape[1] - gt.shape[1] % 8]
        psnr = calculate_psnr(out, gt, crop_border=1)
        assert abs(psnr - ref_psnr) <= TOL_DB, f'{n}: PSNR {psnr:.4f}, RESULTS.md {ref_psnr}'
