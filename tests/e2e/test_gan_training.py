"""A Real-ESRGAN-style GAN training (SRGANModel, UNetDiscriminatorSN, L1 + perceptual + GAN losses) with a
ConverseConverted SRVGGNetCompact generator, through ``basicsr train`` on the CPU."""
from __future__ import annotations

import pytest

import os

import torch

from tests.e2e.helpers import check_ok, experiment_log, make_images, run_cli, tiny_overrides, train_options

pytestmark = pytest.mark.slow

OPTION = 'train_ConvertedSRVGG_x4_GAN.yml'
NAME = 'train_ConvertedSRVGG_x4_GAN'

# No download in tests: torchvision's VGG19 is built with random weights instead of the ImageNet ones
# (a user puts vgg19-dcbb9e9d.pth under experiments/pretrained_models/, BasicSR's local path).
RANDOM_VGG = '''
import sys
import torchvision.models.vgg as vgg
from converse_plugin.cli import main

_vgg19 = vgg.vgg19
vgg.vgg19 = lambda pretrained=False, **kwargs: _vgg19(weights=None)
sys.exit(main())
'''


def test_gan_training_with_a_converted_srvgg_generator(tmp_path):
    data = make_images(str(tmp_path / 'images'), n=4, size=64)
    script = tmp_path / 'random_vgg.py'
    script.write_text(RANDOM_VGG)
    overrides = tiny_overrides(**{
        'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data,
        'network_g:network:num_feat': 8, 'network_g:network:num_conv': 2, 'network_d:num_feat': 8,
        'train:total_iter': 2, 'val:val_freq': 2})
    overrides = [o for o in overrides if not o.startswith(('network_g:num_feat', 'network_g:num_block'))]
    out = check_ok(run_cli(['train', '-opt', train_options(OPTION), '--root', str(tmp_path / 'root'),
                            '--force_yml', *overrides], cwd=str(tmp_path), script=str(script)))
    log = experiment_log(str(tmp_path / 'root'), NAME)
    assert 'Model [SRGANModel] is created.' in log
    for loss in ('l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'):
        assert f'{loss}: ' in log, loss
    assert 'ConverseConverted: ' in out  # the conversion report
    models = tmp_path / 'root' / 'experiments' / NAME / 'models'
    assert sorted(os.listdir(models)) == ['net_d_2.pth', 'net_d_latest.pth', 'net_g_2.pth', 'net_g_latest.pth']
    saved = torch.load(models / 'net_g_latest.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema'}
    assert 'body.6.up.weight' in saved['params'] and saved['params']['body.6.up.weight'].dim() == 4  # Converse2D's kernel
