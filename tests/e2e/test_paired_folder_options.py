"""The option files that train on paired HR/LR folders laid out as DIV2K/DF2K are (BasicSR's PairedImageDataset
with a ``meta_info_file``; validation on Set5's GTmod12/LRbicx<s>): ConverseMSRResNet x2, x3, x4 and
ConverseConverted MSRResNet x4, with their test files (Set5 and Set14, same layout).

The fast tests check that the files are the on-the-fly files' recipes with paired data in place of
BicubicDownsampleDataset; the slow ones run each training file on tiny generated folders (``--force_yml``: 4
iterations, 8 features, one block), then its test file on the trained network."""
from __future__ import annotations

import glob
import math
import re
from os import path as osp

import pytest
import torch

from converse_plugin.engine.options import load_options
from tests.conformance.corpus import make_meta_info, make_paired_folders  # read-only use: BasicSR-style data
from tests.e2e.helpers import OPTIONS, check_ok, experiment_log, run_cli, tiny_overrides, validation_values

# training file -> (test file, scale, the on-the-fly training file it follows)
FILES = {
    'train_ConverseMSRResNet_x2_DF2K_paired.yml': ('test_ConverseMSRResNet_x2_Set5_Set14_paired.yml', 2,
                                                   'train_ConverseMSRResNet_x4_DF2K.yml'),
    'train_ConverseMSRResNet_x3_DF2K_paired.yml': ('test_ConverseMSRResNet_x3_Set5_Set14_paired.yml', 3,
                                                   'train_ConverseMSRResNet_x4_DF2K.yml'),
    'train_ConverseMSRResNet_x4_DF2K_paired.yml': ('test_ConverseMSRResNet_x4_Set5_Set14_paired.yml', 4,
                                                   'train_ConverseMSRResNet_x4_DF2K.yml'),
    'train_ConvertedMSRResNet_x4_DF2K_paired.yml': ('test_ConvertedMSRResNet_x4_Set5_Set14_paired.yml', 4,
                                                    'train_ConvertedMSRResNet_x4_DF2K.yml'),
}


def _load(kind: str, name: str) -> dict:
    return load_options(osp.join(OPTIONS, kind, name))


def test_every_paired_file_is_listed():
    found = {osp.basename(f) for f in glob.glob(osp.join(OPTIONS, '*', '*_paired.yml'))}
    assert found == set(FILES) | {test for test, _, _ in FILES.values()}


@pytest.mark.parametrize('train_file', sorted(FILES))
def test_training_file_is_the_on_the_fly_recipe_on_paired_folders(train_file):
    _, scale, base_file = FILES[train_file]
    opt, base = _load('train', train_file), _load('train', base_file)
    assert opt['name'] == train_file[:-len('.yml')] and opt['scale'] == scale
    train, val = opt['datasets']['train'], opt['datasets']['val']
    assert train == {
        'name': 'DF2K', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/DF2K/DF2K_HR_sub',
        'dataroot_lq': f'datasets/DF2K/DF2K_bicLRx{scale}_sub',
        'meta_info_file': 'datasets/DF2K/meta_info_DF2K_sub_GT.txt', 'filename_tmpl': '{}',
        'io_backend': {'type': 'disk'}, 'gt_size': 32 * scale, 'use_hflip': True, 'use_rot': True,
        'num_worker_per_gpu': 6, 'batch_size_per_gpu': 16, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None}
    assert train['gt_size'] // scale == base['datasets']['train']['gt_size'] // base['scale']  # LR patches 32x32
    assert val == {'name': 'Set5', 'type': 'PairedImageDataset', 'dataroot_gt': 'datasets/Set5/GTmod12',
                   'dataroot_lq': f'datasets/Set5/LRbicx{scale}', 'io_backend': {'type': 'disk'}}
    # everything else is the on-the-fly file's: the paper's network, BasicSR's schedule, EMA, metrics
    net, base_net = opt['network_g'], base['network_g']
    if net['type'] == 'ConverseMSRResNet':
        assert base_net.pop('operator') == 'converse'  # the default; the ablation switch is in the x4 file only
        base_net['upscale'] = scale
    assert net == base_net
    for metric in base['val']['metrics'].values():
        metric['crop_border'] = scale
    for key in ('model_type', 'num_gpu', 'manual_seed', 'path', 'train', 'val', 'logger', 'dist_params'):
        assert opt[key] == base[key], key
    assert opt['train']['optim_g']['lr'] == 2e-4 and opt['train']['total_iter'] == 1_000_000


@pytest.mark.parametrize('train_file', sorted(FILES))
def test_test_file_matches_its_training_file(train_file):
    test_file, scale, _ = FILES[train_file]
    opt, train = _load('test', test_file), _load('train', train_file)
    assert opt['name'] == test_file[:-len('.yml')] and opt['scale'] == scale
    assert opt['network_g'] == train['network_g']
    assert opt['datasets'] == {
        f'test_{i}': {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': f'datasets/{name}/GTmod12',
                      'dataroot_lq': f'datasets/{name}/LRbicx{scale}', 'io_backend': {'type': 'disk'}}
        for i, name in ((1, 'Set5'), (2, 'Set14'))}
    assert opt['val']['metrics'] == train['val']['metrics']
    assert opt['path'] == {'pretrain_network_g': f"experiments/pretrained_models/{train['name'][len('train_'):]}.pth",
                           'param_key_g': 'params_ema', 'strict_load_g': True}
    # the comment's command names the training run's output
    text = open(osp.join(OPTIONS, 'test', test_file), encoding='utf-8').read()
    assert f"path:pretrain_network_g=experiments/{train['name']}/models/net_g_latest.pth" in text


def test_validation_after_an_ema_update_sees_the_new_weights():
    """BasicSR's ``model_ema`` updates ``net_g_ema`` through ``.data`` (no version bump): the next validation
    (eval, no_grad: Converse2D's cached filters) must use the updated weights, as a network loaded with them
    does. Before the fix the filters of the first validation were reused, and every later validation PSNR of a
    training with ``ema_decay`` (all the shipped files) was that of a mix of old and new weights."""
    from converse_plugin.archs.converse_msrresnet_arch import ConverseMSRResNet

    torch.manual_seed(0)
    ema = ConverseMSRResNet(num_feat=8, num_block=1, upscale=2).eval()
    net = ConverseMSRResNet(num_feat=8, num_block=1, upscale=2)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        before = ema(x)  # the first validation fills the caches
        ema_params, net_params = dict(ema.named_parameters()), dict(net.named_parameters())
        for k in ema_params:  # basicsr.models.base_model.BaseModel.model_ema, decay 0.5
            ema_params[k].data.mul_(0.5).add_(net_params[k].data, alpha=0.5)
        after = ema(x)
        fresh = ConverseMSRResNet(num_feat=8, num_block=1, upscale=2).eval()
        fresh.load_state_dict(ema.state_dict())
        expected = fresh(x)
    assert not torch.allclose(after, before, atol=1e-4)
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ runs on data
def _network_overrides(train_file: str) -> dict:
    if 'Converted' in train_file:  # the nested original architecture is what shrinks
        return {'network_g:network:num_feat': 8, 'network_g:network:num_block': 1}
    return {'network_g:num_feat': 8, 'network_g:num_block': 1}


def _shrunk(overrides: list[str]) -> list[str]:
    """``tiny_overrides`` without its network keys (each run names its own)."""
    return [o for o in overrides if not o.startswith(('network_g:num_feat=', 'network_g:num_block='))]


@pytest.mark.slow
@pytest.mark.parametrize('train_file', sorted(FILES))
def test_trains_on_paired_folders_then_its_test_file_evaluates(train_file, tmp_path):
    test_file, scale, _ = FILES[train_file]
    # DF2K-like training folders (5 pairs, GT 48x48, bicubic LQ, same names) and a meta info file naming 4
    gt, lq = make_paired_folders(str(tmp_path / 'DF2K'), scale, n=5, seed=0)
    meta = make_meta_info(gt, str(tmp_path / 'meta_info.txt'), names=['0001.png', '0002.png', '0004.png', '0005.png'])
    set5 = make_paired_folders(str(tmp_path / 'Set5'), scale, n=2, seed=1)
    set14 = make_paired_folders(str(tmp_path / 'Set14'), scale, n=3, seed=2)
    net = _network_overrides(train_file)
    name = train_file[:-len('.yml')]
    root = tmp_path / 'root'
    overrides = _shrunk(tiny_overrides(**{
        'datasets:train:dataroot_gt': gt, 'datasets:train:dataroot_lq': lq, 'datasets:train:meta_info_file': meta,
        'datasets:train:gt_size': 16 * scale if scale < 4 else 32,  # LR patches 16x16 (x4: 8x8)
        'datasets:val:dataroot_gt': set5[0], 'datasets:val:dataroot_lq': set5[1]})) + [f'{k}={v}' for k, v in net.items()]
    check_ok(run_cli(['train', '-opt', osp.join(OPTIONS, 'train', train_file), '--root', str(root),
                      '--force_yml', *overrides], cwd=str(tmp_path), timeout=240))

    log = experiment_log(str(root), name)
    assert 'Number of train images: 4' in log  # the meta info file's pairs, not the folder's 5
    assert 'Dataset [PairedImageDataset] - DF2K is built.' in log
    assert 'Dataset [PairedImageDataset] - Set5 is built.' in log
    iters = [int(i) for i in re.findall(r'iter:\s+(\d+), lr:.*l_pix: ', log)]
    assert iters == [1, 2, 3, 4], log[-3000:]
    psnr = validation_values(log, 'Set5', 'psnr')
    ssim = validation_values(log, 'Set5', 'ssim')
    # at iterations 2 and 4 and after training (the same EMA network as at 4); a network 4 steps from its random
    # start is far from the images (11-12 dB measured at x2), but not from the right range
    assert len(psnr) == 3 and all(math.isfinite(v) and 5 < v < 60 for v in psnr) and psnr[1] == psnr[2], psnr
    assert len(ssim) == 3 and all(0 < v <= 1 for v in ssim), ssim
    net_g = root / 'experiments' / name / 'models' / 'net_g_latest.pth'
    state = torch.load(net_g, map_location='cpu')
    assert set(state) == {'params', 'params_ema'}
    assert state['params_ema']['conv_first.weight'].shape[0] == 8  # the shrunk network (8 features)
    assert all(torch.isfinite(v).all() for v in state['params_ema'].values())
    if 'Converted' in train_file:
        assert 'ConverseConverted: Converted MSRResNet to reverse convolution' in log
        assert 'upconv2.up.weight' in state['params_ema']

    # the test file on the trained network: Set5 as the validation saw it, and Set14
    test_name = test_file[:-len('.yml')]
    test_root = tmp_path / 'test_root'
    test_overrides = [f'{k}={v}' for k, v in {
        'datasets:test_1:dataroot_gt': set5[0], 'datasets:test_1:dataroot_lq': set5[1],
        'datasets:test_2:dataroot_gt': set14[0], 'datasets:test_2:dataroot_lq': set14[1],
        'path:pretrain_network_g': str(net_g), 'val:pbar': 'false', **net}.items()]
    check_ok(run_cli(['test', '-opt', osp.join(OPTIONS, 'test', test_file), '--root', str(test_root),
                      '--force_yml', *test_overrides], cwd=str(tmp_path), timeout=240))
    test_log = experiment_log(str(test_root), test_name, kind='test')
    test_psnr = validation_values(test_log, 'Set5', 'psnr')
    # params_ema is the network the training validated last: the same PSNR on the same images
    assert len(test_psnr) == 1 and test_psnr[0] == pytest.approx(psnr[-1], abs=1e-4), (test_psnr, psnr)
    set14_psnr = validation_values(test_log, 'Set14', 'psnr')
    assert len(set14_psnr) == 1 and 5 < set14_psnr[0] < 60, set14_psnr
    for dataset, n in (('Set5', 2), ('Set14', 3)):
        images = sorted(glob.glob(str(test_root / 'results' / test_name / 'visualization' / dataset / '*.png')))
        assert [osp.basename(f) for f in images] == [f'{i:04d}_{test_name}.png' for i in range(1, n + 1)]
