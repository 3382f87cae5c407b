"""Every shipped option file parses with the pipeline's parser, names registered types, builds its
network; the ablation files differ from their base only in ``name`` and ``network_g.operator``; the
test files load the released checkpoints strictly."""
from __future__ import annotations

import copy
import glob
import re
from os import path as osp

import pytest
import torch

import converse_plugin  # noqa: F401  (registers everything; patches BasicSR first)
from basicsr.archs import build_network  # noqa: E402  isort: skip
from basicsr.utils.registry import DATASET_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY  # noqa: E402  isort: skip
from converse_plugin.engine.options import load_options, parse_options  # noqa: E402  isort: skip
from tests.e2e.helpers import OPTIONS, SHARED, needs_shared  # noqa: E402  isort: skip

FILES = sorted(f for f in glob.glob(osp.join(OPTIONS, '*', '*.yml'))
               if osp.basename(osp.dirname(f)) != 'compare')  # compare/: test sets only (see the end)
COMPARE_FILES = sorted(glob.glob(osp.join(OPTIONS, 'compare', '*.yml')))
ABLATIONS = {  # ablation file -> (base file, operator)
    'train_ConvDnCNN_gray_sigma25.yml': ('train_ConverseDnCNN_gray_sigma25.yml', 'conv'),
    'train_ConvTDnCNN_gray_sigma25.yml': ('train_ConverseDnCNN_gray_sigma25.yml', 'convt'),
    'train_ConvMSRResNet_x4_DF2K.yml': ('train_ConverseMSRResNet_x4_DF2K.yml', 'conv'),
    'train_ConvTMSRResNet_x4_DF2K.yml': ('train_ConverseMSRResNet_x4_DF2K.yml', 'convt'),
    'train_ConvNet_deblur_blind.yml': ('train_ConverseNet_deblur_blind.yml', 'conv'),
    'train_ConvUSRNet_deblur.yml': ('train_ConverseUSRNet_deblur.yml', 'conv'),
}
CHECKPOINTS = {  # released checkpoint -> its test option files
    'converse_dncnn.pth': ['test_ConverseDnCNN_Set12_sigma25.yml'],
    'kair_dncnn_sigma25.pth': ['test_DnCNN_Set12_sigma25.yml'],
    'converse_srresnet.pth': ['test_ConverseMSRResNet_x4_Set5.yml', 'test_ConverseMSRResNet_x4_Set14.yml'],
    'conversenet.pth': ['test_ConverseNet_B100_deblur5.yml'],
    'converse_usrnet.pth': ['test_ConverseUSRNet_B100_deblur5.yml'],
}


def test_every_folder_has_files():
    kinds = {osp.basename(osp.dirname(f)) for f in FILES}
    assert kinds == {'train', 'test', 'demo'}
    converted = [f for f in FILES if '/train/train_Converted' in f]  # the conversion wrapper's files (ConverseConverted)
    assert len(converted) == 6  # MSRResNet (LR on the fly and paired folders), EDSR, RCAN, SwinIR, SRVGG (GAN)
    cpu = [f for f in FILES if f.endswith('_cpu.yml')]  # the CPU recipe
    assert len(cpu) == 1
    paired = [f for f in FILES if '/train/train_Converse' in f and f.endswith('_paired.yml')]
    assert len(paired) == 3  # ConverseMSRResNet x2, x3, x4 on paired HR/LR folders (test_paired_folder_options.py)
    assert len([f for f in FILES if '/train/' in f]) == 4 + len(ABLATIONS) + len(converted) + len(cpu) + len(paired)


@pytest.mark.parametrize('path', FILES, ids=lambda p: osp.relpath(p, OPTIONS))
def test_option_file_is_valid(path, tmp_path):
    is_train = f'{osp.sep}test{osp.sep}' not in path
    opt, _ = parse_options(str(tmp_path), is_train=is_train, argv=['-opt', path])
    assert opt['name'] == osp.splitext(osp.basename(path))[0]
    assert opt['model_type'] in MODEL_REGISTRY
    for phase, dataset in opt['datasets'].items():
        assert dataset['type'] in DATASET_REGISTRY, phase
        assert dataset['dataroot_gt'].startswith(('datasets/', 'demo_data/')), dataset['dataroot_gt']
    metrics = opt['val']['metrics']
    assert metrics and all(m['type'] in METRIC_REGISTRY for m in metrics.values())
    net = build_network(copy.deepcopy(opt['network_g']))
    assert sum(p.numel() for p in net.parameters()) > 0
    if is_train:
        assert opt['path']['experiments_root'] == osp.join(str(tmp_path), 'experiments', opt['name'])
    else:
        assert opt['path']['pretrain_network_g'].startswith('experiments/pretrained_models/')
        if path.endswith('_paired.yml'):  # models trained with the paired-folder files: their EMA weights
            assert opt['path']['param_key_g'] == 'params_ema'
        else:
            assert opt['path']['param_key_g'] is None  # the released checkpoints: plain state dicts


@pytest.mark.parametrize('ablation', sorted(ABLATIONS))
def test_ablation_differs_from_its_base_only_in_the_operator(ablation):
    base_name, operator = ABLATIONS[ablation]
    base = load_options(osp.join(OPTIONS, 'train', base_name))
    variant = load_options(osp.join(OPTIONS, 'train', ablation))
    assert base['network_g']['operator'] == 'converse'
    assert variant['network_g']['operator'] == operator
    assert variant['name'] == ablation[:-len('.yml')]
    for opt in (base, variant):
        del opt['name'], opt['network_g']['operator']
    assert variant == base


def test_test_files_cover_every_released_checkpoint():
    for checkpoint, files in CHECKPOINTS.items():
        for name in files:
            opt = load_options(osp.join(OPTIONS, 'test', name))
            assert opt['path']['pretrain_network_g'] == f'experiments/pretrained_models/{checkpoint}', name


@needs_shared
@pytest.mark.parametrize('checkpoint', sorted(CHECKPOINTS))
def test_test_files_load_the_released_checkpoints_strictly(checkpoint):
    state = torch.load(osp.join(SHARED, 'zoo', checkpoint), map_location='cpu')
    for name in CHECKPOINTS[checkpoint]:
        opt = load_options(osp.join(OPTIONS, 'test', name))
        net = build_network(copy.deepcopy(opt['network_g']))
        net.load_state_dict(state, strict=True)


def test_deblur_test_files_use_the_five_kernels():
    for name in ('test_ConverseNet_B100_deblur5.yml', 'test_ConverseUSRNet_B100_deblur5.yml'):
        opt = load_options(osp.join(OPTIONS, 'test', name))
        kernels = [d['kernels'] for d in opt['datasets'].values()]
        assert kernels == [f'datasets/kernels/kernel_{k}.npy' for k in range(1, 6)]
        assert all(d['sigma'] == 2.55 for d in opt['datasets'].values())
        assert opt['val']['metrics']['psnr'] == {'type': 'calculate_psnr', 'crop_border': 1, 'test_y_channel': False}
    assert re.search(r'model_type: Converse(Deblur)?Model', open(osp.join(OPTIONS, 'test', name)).read())


@needs_shared
@pytest.mark.parametrize('path', COMPARE_FILES, ids=osp.basename)
def test_compare_dataset_files_build_their_test_sets(path, monkeypatch):
    from basicsr.data import build_dataset

    monkeypatch.chdir(osp.dirname(OPTIONS))  # their dataroots are relative to the repository root
    sets = load_options(path)['datasets']
    assert sets
    for key, dataset_opt in sets.items():
        dataset = build_dataset(dict(dataset_opt, phase='test'))
        assert len(dataset) > 0, key
        item = dataset[0]
        assert item['lq'].shape == item['gt'].shape, key
