"""Each bad input ends ``basicsr train|test`` with exit status 2 and one message naming the file or key
and what was expected, before anything is written or trained (in-process runs of the CLI)."""
from __future__ import annotations

import argparse
import os
from os import path as osp

import pytest
import torch

from converse_plugin.archs.converse_dncnn_arch import ConverseDnCNN
from converse_plugin.errors import OptionError
from tests.robustness.common import make_images, options, run, write_options


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> str:
    return make_images(str(tmp_path_factory.mktemp('images') / 'rgb'), n=2, size=24)


def _fails(capsys, tmp_path, opt: dict | None = None, text: str | None = None, command: str = 'train',
           code: int = 2) -> str:
    """Run with ``opt`` (or the raw option ``text``); assert the exit code, one error line, no traceback,
    and that nothing was written under the root. Returns the error message."""
    file = str(tmp_path / 'opt.yml')
    if text is not None:
        with open(file, 'w', encoding='utf-8') as f:
            f.write(text)
    else:
        write_options(file, opt)
    root = tmp_path / 'root'
    assert run(command, file, str(root)) == code
    err = capsys.readouterr().err
    prefix = f'basicsr {command}: error: '
    assert err.count(prefix) == 1, err
    assert 'Traceback' not in err, err
    message = err[err.index(prefix):]
    if code == 2:  # refused before anything ran
        assert not root.exists() or not any(root.rglob('*.pth')), 'a refused run wrote files'
    return message


# ------------------------------------------------------------------------------ option files
def test_invalid_yaml_names_line_and_column(capsys, tmp_path):
    msg = _fails(capsys, tmp_path, text='name: x\ndatasets:\n  train: [1, 2\nnum_gpu: 0\n')
    assert 'opt.yml' in msg and 'not valid YAML' in msg and 'line 4' in msg and 'column' in msg


def test_python_tag_is_refused_and_nothing_runs(capsys, tmp_path):
    marker = tmp_path / 'pwned'
    msg = _fails(capsys, tmp_path, text=f"name: !!python/object/apply:os.system ['touch {marker}']\nnum_gpu: 0\n")
    assert '!!python' in msg and 'not allowed' in msg and 'line 1' in msg
    assert not marker.exists()


@pytest.mark.parametrize('key, value, words', [
    ('network_g:type', 'ConverseDnCNNN', ['network_g:type', "unknown network type 'ConverseDnCNNN'", 'ConverseDnCNN']),
    ('datasets:train:type', 'GaussianNoiseDataSet', ['datasets:train:type', 'unknown dataset', 'GaussianNoiseDataset']),
    ('model_type', 'SRModle', ['model_type', 'unknown model', 'SRModel']),
    ('val:metrics:psnr:type', 'calculate_psrn', ['val:metrics:psnr:type', 'unknown metric', 'calculate_psnr']),
    ('train:pixel_opt:type', 'L1loss', ['train:pixel_opt:type', 'unknown loss', 'L1Loss']),
])
def test_unknown_type_lists_the_closest_registered_names(capsys, tmp_path, data, key, value, words):
    msg = _fails(capsys, tmp_path, options(data, **{key: value}))
    assert all(w in msg for w in words), msg


@pytest.mark.parametrize('key, words', [
    ('train:total_iter', ['missing required option train:total_iter']),
    ('datasets:train:batch_size_per_gpu', ['missing required option datasets:train:batch_size_per_gpu']),
    ('network_g:type', ['missing required option network_g:type']),
    ('logger:save_checkpoint_freq', ['missing required option logger:save_checkpoint_freq']),
])
def test_missing_required_key_is_named(capsys, tmp_path, data, key, words):
    msg = _fails(capsys, tmp_path, options(data, **{key: None}))
    assert all(w in msg for w in words), msg


@pytest.mark.parametrize('key, value, words', [
    ('datasets:train:sigma', -5, ['datasets:train', "'sigma' must be in [0, 255]", '-5']),
    ('scale', 0, ['scale must be an integer >= 1', 'got 0']),
    ('network_g:kernel_size', 0, ['network_g', 'kernel_size must be an integer >= 1', 'got 0']),
    ('network_g:padding_mode', 'mirror', ['network_g', 'padding_mode must be one of', "'mirror'"]),
    ('network_g:num_fet', 8, ['network_g', "unexpected keyword argument 'num_fet'", 'num_feat']),
    ('train:total_iter', 'many', ['train:total_iter must be an integer >= 1', "'many'"]),
    ('datasets:train:gt_size', 0, ['datasets:train', "'gt_size' must be a positive integer"]),
    ('datasets:train:color', 'cmyk', ['datasets:train', "'color' must be one of"]),
    ('train:cpu_allocator', 'jemalloc', ['train:cpu_allocator: expected cache or system', "'jemalloc'"]),
    ('train:flush_denormal', 'yes', ['train:flush_denormal: expected true or false', "'yes'"]),
    ('val:cpu_allocator', 'cache', ['val:cpu_allocator is for basicsr test', 'set train:cpu_allocator instead']),
])
def test_wrong_type_or_range_is_named(capsys, tmp_path, data, key, value, words):
    msg = _fails(capsys, tmp_path, options(data, **{key: value}))
    assert all(w in msg for w in words), msg


def test_warmup_iter_null_is_named(capsys, tmp_path, data):
    opt = options(data)
    opt['train']['warmup_iter'] = None  # BasicSR compares it with the iteration: a TypeError in the first step
    msg = _fails(capsys, tmp_path, opt)
    assert 'train:warmup_iter must be an integer >= -1' in msg and 'got None' in msg, msg


def test_padding_the_image_is_too_small_for(capsys, tmp_path):
    small = make_images(str(tmp_path / 'small'), n=1, size=5)
    opt = options(small, **{'datasets:train:gt_size': None, 'network_g:padding': 6, 'network_g:padding_mode': 'reflect'})
    msg = _fails(capsys, tmp_path, opt)
    assert 'img0.png' in msg and 'too small for network_g layer' in msg and "'reflect'" in msg and 'padding 6' in msg


# ------------------------------------------------------------------------------ data
def test_missing_dataroot(capsys, tmp_path, data):
    msg = _fails(capsys, tmp_path, options(data, **{'datasets:train:dataroot_gt': str(tmp_path / 'nowhere')}))
    assert 'datasets:train' in msg and 'nowhere does not exist' in msg and 'dataroot_gt' in msg


def test_dataroot_without_images(capsys, tmp_path, data):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    msg = _fails(capsys, tmp_path, options(data, **{'datasets:val:dataroot_gt': str(tmp_path / 'empty')}))
    assert 'datasets:val' in msg and 'contains no image files' in msg


def test_undecodable_image(capsys, tmp_path):
    folder = make_images(str(tmp_path / 'imgs'), n=2, size=24)
    with open(osp.join(folder, 'broken.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + os.urandom(64))
    msg = _fails(capsys, tmp_path, options(folder))
    assert 'cannot decode image file' in msg and 'broken.png' in msg


def test_image_smaller_than_the_crop(capsys, tmp_path, data):
    msg = _fails(capsys, tmp_path, options(data, **{'datasets:train:gt_size': 32}))
    assert 'datasets:train' in msg and 'is 24x24 (HxW), smaller than gt_size 32x32' in msg


def test_gray_and_rgb_images_are_converted_and_reported(tmp_path):
    from converse_plugin.data import GaussianNoiseDataset
    from converse_plugin.engine.validate import validate_options

    gray = make_images(str(tmp_path / 'gray'), n=2, size=24, gray=True)
    rgb = make_images(str(tmp_path / 'rgb'), n=2, size=24)
    gray_run = options(rgb)  # gray datasets (and a gray network) fed with RGB images ...
    rgb_run = options(gray, **{'network_g:num_in_ch': 3, 'network_g:num_out_ch': 3})  # ... an RGB one with gray
    for opt in (gray_run, rgb_run):
        for ds in opt['datasets'].values():
            ds['phase'] = 'val' if ds['name'] == 'tinyval' else 'train'
    for ds in rgb_run['datasets'].values():
        ds['color'] = 'rgb'
    notes = validate_options(gray_run, 'opt.yml', is_train=True)
    assert any('datasets:train' in n and 'converted to gray' in n for n in notes), notes
    notes = validate_options(rgb_run, 'opt.yml', is_train=True)
    assert any('datasets:val' in n and 'replicated to 3 equal channels' in n for n in notes), notes
    assert GaussianNoiseDataset(dict(rgb_run['datasets']['val']))[0]['gt'].shape[0] == 3
    assert GaussianNoiseDataset(dict(gray_run['datasets']['train']))[0]['gt'].shape[0] == 1
    rgb_run['network_g'].update(num_in_ch=1, num_out_ch=1)  # a gray network cannot take the RGB images
    with pytest.raises(OptionError, match='network_g cannot process the images of datasets:train'):
        validate_options(rgb_run, 'opt.yml', is_train=True)


# ------------------------------------------------------------------------------ checkpoints
def _with_pretrained(data: str, path: str, **changes) -> dict:
    return options(data, **{'path:pretrain_network_g': path, **changes})


def test_missing_checkpoint(capsys, tmp_path, data):
    msg = _fails(capsys, tmp_path, _with_pretrained(data, str(tmp_path / 'gone.pth')))
    assert 'path:pretrain_network_g' in msg and 'gone.pth does not exist' in msg


def _net_state(**kwargs) -> dict:
    return ConverseDnCNN(num_feat=8, num_block=1, kernel_size=3, padding=2, **kwargs).state_dict()


def test_truncated_checkpoint(capsys, tmp_path, data):
    path = tmp_path / 'net.pth'
    torch.save(_net_state(), path)
    path.write_bytes(path.read_bytes()[:300])
    msg = _fails(capsys, tmp_path, _with_pretrained(data, str(path)))
    assert 'net.pth' in msg and 'truncated or not a PyTorch checkpoint' in msg


def test_file_that_is_not_a_checkpoint(capsys, tmp_path, data):
    path = tmp_path / 'notes.pth'
    path.write_text('these are my notes, not weights\n' * 20)
    msg = _fails(capsys, tmp_path, _with_pretrained(data, str(path)), command='train')
    assert 'notes.pth' in msg and 'not a PyTorch checkpoint' in msg


def test_checkpoint_needing_arbitrary_unpickling_is_refused_with_how_to_convert(capsys, tmp_path, data):
    path = tmp_path / 'pickled.pth'
    torch.save({'net': _net_state(), 'args': argparse.Namespace(lr=1)}, path)
    msg = _fails(capsys, tmp_path, _with_pretrained(data, str(path)))
    assert 'pickled.pth' in msg and 'arbitrary unpickling' in msg and 'refused' in msg
    assert 'weights_only=False' in msg and 'torch.save' in msg


def test_mismatched_checkpoint_lists_missing_unexpected_and_mismatched_keys(capsys, tmp_path, data):
    state = _net_state()
    state.pop('m_head.0.bias')
    state['extra.weight'] = torch.zeros(1)
    state['m_tail.0.weight'] = torch.zeros(1, 8, 3, 3)
    path = tmp_path / 'other.pth'
    torch.save({'params': state}, path)
    msg = _fails(capsys, tmp_path, _with_pretrained(data, str(path)))
    assert 'other.pth' in msg and 'missing keys (1): m_head.0.bias' in msg
    assert 'unexpected keys (1): extra.weight' in msg
    assert 'mismatched shapes (1): m_tail.0.weight (checkpoint [1, 8, 3, 3], network [1, 8, 1, 1])' in msg


def test_test_command_reports_a_bad_checkpoint_too(capsys, tmp_path, data):
    opt = _with_pretrained(data, str(tmp_path / 'gone.pth'))
    for key in ('train', 'logger'):
        opt.pop(key)
    opt['datasets'] = {'test': opt['datasets']['val']}
    msg = _fails(capsys, tmp_path, opt, command='test')
    assert 'gone.pth does not exist' in msg


def test_test_command_checks_val_cpu_allocator(capsys, tmp_path, data):
    opt = options(data, **{'val:cpu_allocator': 'tcmalloc', 'train': None, 'logger': None})
    opt['datasets'] = {'test': opt['datasets']['val']}
    msg = _fails(capsys, tmp_path, opt, command='test')
    assert 'opt.yml' in msg and "val:cpu_allocator: expected cache or system, got 'tcmalloc'" in msg


# ------------------------------------------------------------------------------ NaN / Inf in training
def test_nan_loss_stops_training_naming_the_iteration_and_last_checkpoint(capsys, tmp_path, data):
    opt = options(data, **{'train:optim_g:lr': 1e30, 'logger:save_checkpoint_freq': 1, 'val': None,
                           'train:total_iter': 50})
    msg = _fails(capsys, tmp_path, opt, code=3)
    assert 'NaN or Inf in the loss at iteration' in msg
    it = int(msg.split('at iteration ')[1].split(' ')[0])
    assert it >= 2 and f'last good checkpoint: ' in msg and f'net_g_{it - 1}.pth' in msg and f'{it - 1}.state' in msg
    states = os.listdir(tmp_path / 'root' / 'experiments' / 'robust' / 'training_states')
    assert f'{it}.state' not in states and f'{it - 1}.state' in states


def test_nan_input_stops_training_before_the_step(capsys, tmp_path, data, monkeypatch):
    from converse_plugin.data import GaussianNoiseDataset

    original = GaussianNoiseDataset.__getitem__

    def with_nan(self, index):
        item = original(self, index)
        item['lq'][0, 0, 0] = float('nan')
        return item

    monkeypatch.setattr(GaussianNoiseDataset, '__getitem__', with_nan)
    msg = _fails(capsys, tmp_path, options(data, val=None), code=3)
    assert "NaN or Inf in the network input 'lq' at iteration 1" in msg and 'img' in msg
    assert 'no checkpoint was saved before it' in msg


@pytest.mark.parametrize('model_type', ['SRModel', 'ConverseModel', 'ConverseDeblurModel'])
def test_a_model_without_a_loss_is_refused_whatever_its_name(capsys, tmp_path, data, model_type):
    """ConverseModel, its old name ConverseDeblurModel and SRModel all need pixel_opt or perceptual_opt:
    the check asks what the class is (an SRModel that is not a GAN model), not its name."""
    msg = _fails(capsys, tmp_path, options(data, model_type=model_type, **{'train:pixel_opt': None}))
    assert 'train needs a loss: pixel_opt or perceptual_opt' in msg, msg
