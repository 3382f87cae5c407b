"""``basicsr demo``, shortened with ``--force_yml`` (the full demo trains for about 3 minutes)."""
from __future__ import annotations

import pytest

import os
import re

import cv2

from tests.e2e.helpers import run_cli

pytestmark = pytest.mark.slow

NAME = 'demo_ConverseDnCNN_gray_sigma25'


def test_short_demo_builds_data_trains_and_reports(tmp_path):
    proc = run_cli(['demo', '--root', str(tmp_path), '--force_yml', 'train:total_iter=20', 'val:val_freq=10',
                    'logger:print_freq=10', 'logger:save_checkpoint_freq=10'], cwd=str(tmp_path))
    out = proc.stdout
    for split, size in (('train', 64), ('val', 96)):
        files = os.listdir(tmp_path / 'demo_data' / split)
        assert len(files) >= (50 if split == 'train' else 2), files
        img = cv2.imread(str(tmp_path / 'demo_data' / split / files[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (size, size), (split, img.shape)  # gray patches

    assert re.search(r'iter:\s+10, .*l_pix', out), out[-3000:]
    match = re.search(r'mean\s+noisy\s+([\d.]+) dB\s+restored\s+([\d.]+) dB\s+gain ([+-][\d.]+) dB', out)
    assert match, out[-3000:]
    noisy, restored, gain = map(float, match.groups())
    assert 19.5 < noisy < 22.5  # sigma = 25 on uint8 patches
    assert abs(restored - noisy - gain) < 0.011
    # the exit status follows the 5 dB rule (20 iterations may or may not get there)
    assert proc.returncode == (0 if gain >= 5 else 1), out[-3000:]

    exp = tmp_path / 'experiments' / NAME
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    restored_files = sorted(os.listdir(exp / 'demo_results'))
    assert len(restored_files) == 2 * len(os.listdir(tmp_path / 'demo_data' / 'val'))
    assert f'Checkpoint: {exp / "models" / "net_g_latest.pth"}' in out
