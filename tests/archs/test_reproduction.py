"""The released checkpoints reproduce RESULTS.md per image (within 0.01 dB) with the spec §4 protocols.

Runs the architectures in-process on the plugin's datasets (the same degradation code `basicsr test`
uses). Needs ../shared (checkpoints and images); skips with a reason without it.
"""
from __future__ import annotations

from os import path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img

from converse_plugin.metrics.psnr_ssim import calculate_psnr_y_matlab
from tests.conftest import require_shared

SET12 = {'01': 30.44, '02': 33.60, '03': 31.09, '04': 29.58, '05': 30.55, '06': 29.27, '07': 29.58, '08': 32.80,
         '09': 30.41, '10': 30.45, '11': 30.19, '12': 30.42}
SET5_Y = {'baby': 33.81, 'bird': 35.04, 'butterfly': 28.67, 'head': 32.94, 'woman': 30.78}
USRNET_K1 = {'101085': 28.59, '101087': 33.15, '102061': 32.37, '103070': 35.38, '105025': 31.01}
CONVERSENET_K1 = {'101085': 25.16, '101087': 28.48, '102061': 26.71, '103070': 29.30}
TOL = 0.01 + 0.005  # RESULTS.md rounds to 0.01 dB: a value within 0.01 of the truth can print 0.015 away


def load(name: str, checkpoint: str):
    net = build_network({'type': name})
    net.load_state_dict(torch.load(require_shared('zoo', checkpoint), map_location='cpu', weights_only=True))
    return net.eval()


def run(net, dataset_opt: dict, metric, crop_border: int, with_kernel: bool = False, only=None) -> dict:
    dataset = build_dataset(dict(dataset_opt, name='t', phase='test', io_backend={'type': 'disk'}))
    scores = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            stem = osp.splitext(osp.basename(item['gt_path']))[0]
            if only is not None and stem not in only:
                continue
            lq = item['lq'][None]
            out = net(lq, item['kernel'][None]) if with_kernel else net(lq)
            scores[stem] = metric(tensor2img(out), tensor2img(item['gt'][None]), crop_border=crop_border)
    return scores


def assert_close(scores: dict, expected: dict):
    assert set(scores) == set(expected)
    off = {k: (round(scores[k], 4), v) for k, v in expected.items() if abs(scores[k] - v) > TOL}
    assert not off, f'per-image PSNR off by more than {TOL} dB: {off}'


def test_converse_dncnn_set12_sigma25():
    net = load('ConverseDnCNN', 'converse_dncnn.pth')
    scores = run(net, {'type': 'GaussianNoiseDataset', 'dataroot_gt': str(require_shared('data', 'Set12')),
                       'color': 'gray', 'sigma': 25}, calculate_psnr, 0)
    assert_close(scores, SET12)
    assert abs(sum(scores.values()) / 12 - 30.70) < 0.005 + 1e-9


def test_converse_msrresnet_set5_x4_y():
    net = load('ConverseMSRResNet', 'converse_srresnet.pth')
    scores = run(net, {'type': 'BicubicDownsampleDataset', 'dataroot_gt': str(require_shared('data', 'Set5', 'HR')),
                       'scale': 4}, calculate_psnr_y_matlab, 4)
    assert_close(scores, SET5_Y)
    assert abs(sum(scores.values()) / 5 - 32.25) < 0.005 + 1e-9


@pytest.mark.parametrize('name,checkpoint,expected', [
    ('ConverseUSRNet', 'converse_usrnet.pth', USRNET_K1),
    ('ConverseNet', 'conversenet.pth', CONVERSENET_K1),
])
def test_deblurring_b100_kernel1(name, checkpoint, expected):
    net = load(name, checkpoint)
    opt = {'type': 'BlurKernelDataset', 'dataroot_gt': str(require_shared('data', 'B100_deblur5')),
           'kernels': str(require_shared('data', 'kernels', 'kernel_1.npy')), 'sigma': 2.55}
    scores = run(net, opt, calculate_psnr, 1, with_kernel=name == 'ConverseUSRNet', only=set(expected))
    assert_close(scores, expected)
