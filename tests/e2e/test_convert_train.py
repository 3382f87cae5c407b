"""``basicsr train`` with the ConverseConverted option files (MSRResNet x4, EDSR x2, RCAN x4, SwinIR x2),
shrunk by ``--force_yml`` to tiny networks, crops and two CPU iterations; the MSRResNet run fine-tunes
from a checkpoint of the original architecture."""
from __future__ import annotations

import math

import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet

from tests.e2e.helpers import check_ok, experiment_log, make_images, run_cli, train_options, validation_values

pytestmark = pytest.mark.slow

# option file -> (tiny original network as a YAML flow mapping, HR crop, a key only the converted net has)
RUNS = {
    'train_ConvertedMSRResNet_x4_DF2K.yml': ('{type: MSRResNet, num_feat: 8, num_block: 1, upscale: 4}', 32,
                                             'upconv2.up.weight'),
    'train_ConvertedEDSR_x2_DF2K.yml': ('{type: EDSR, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_block: 1, '
                                        'upscale: 2}', 24, 'upsample.0.up.weight'),
    'train_ConvertedRCAN_x4_DF2K.yml': ('{type: RCAN, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_group: 1, '
                                        'num_block: 1, squeeze_factor: 4, upscale: 4}', 32, 'upsample.2.up.weight'),
    'train_ConvertedSwinIR_x2_DF2K.yml': ('{type: SwinIR, upscale: 2, in_chans: 3, img_size: 12, window_size: 4, '
                                          'embed_dim: 12, depths: [1], num_heads: [2], mlp_ratio: 2, '
                                          'upsampler: pixelshuffledirect}', 24, 'upsample.0.up.weight'),
}


@pytest.mark.parametrize('option_file', sorted(RUNS))
def test_converted_network_trains(option_file, tmp_path):
    network, gt_size, new_key = RUNS[option_file]
    data = make_images(str(tmp_path / 'images'), n=4, size=48)
    overrides = {
        'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data,
        'datasets:train:num_worker_per_gpu': 0, 'datasets:train:batch_size_per_gpu': 2,
        'datasets:train:gt_size': gt_size, 'network_g:network': network,
        'train:total_iter': 2, 'val:val_freq': 2, 'logger:print_freq': 1, 'logger:save_checkpoint_freq': 2,
        'logger:use_tb_logger': 'false',
    }
    if 'MSRResNet' in option_file:  # fine-tune from a checkpoint of the original architecture
        torch.manual_seed(0)
        torch.save({'params': MSRResNet(num_feat=8, num_block=1, upscale=4).state_dict()}, tmp_path / 'orig.pth')
        overrides['path:pretrain_network_g'] = str(tmp_path / 'orig.pth')
    root = tmp_path / 'root'
    proc = run_cli(['train', '-opt', train_options(option_file), '--root', str(root), '--force_yml',
                    *[f'{k}={v}' for k, v in overrides.items()]], cwd=str(tmp_path), timeout=240)
    out = check_ok(proc)

    name = option_file[:-len('.yml')]
    log = experiment_log(str(root), name)
    arch = network.split(',')[0].split(': ')[1]
    assert f'ConverseConverted: Converted {arch} to reverse convolution' in log
    assert 'l_pix: ' in log and 'iter:       2' in log
    values = validation_values(log, 'Set5', 'psnr')
    assert len(values) == 2 and all(math.isfinite(v) for v in values), values  # at iter 2 and at the end
    state = torch.load(root / 'experiments' / name / 'models' / 'net_g_2.pth', map_location='cpu')['params']
    assert new_key in state, f'{new_key} not in the saved network; output tail:\n{out[-2000:]}'
    assert not any(isinstance(v, torch.Tensor) and not torch.isfinite(v).all() for v in state.values())
    if 'MSRResNet' in option_file:
        # 4 original tensors (upconv1/2 weight and bias) replaced by 8 new ones
        n_orig = len(MSRResNet(num_feat=8, num_block=1, upscale=4).state_dict())
        assert f'Loading into the converted network: {n_orig - 4} of {n_orig + 4} tensors loaded, 8 initialised, ' \
               f'4 checkpoint key(s) unused' in log
