"""Side by side with another BasicSR plugin: the ``realesrgan`` package (PyPI 0.3.0) registers its own
classes under the plain names (SRVGGNetCompact, RealESRGANModel, ...); ``basicsr train --import realesrgan``
(or the option file's ``imports:``) loads it before the options are checked, so its types are usable."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.helpers import check_ok, make_images, run_cli, tiny_overrides, train_options

realesrgan_missing = pytest.mark.skipif(
    subprocess.run([sys.executable, '-c', 'import importlib.util, sys; '
                    "sys.exit(importlib.util.find_spec('realesrgan') is None)"]).returncode != 0,
    reason="needs the realesrgan package (pip install realesrgan==0.3.0; CI installs it)")

OPTION = 'train_ConvertedSRVGG_x4_GAN.yml'


@realesrgan_missing
@pytest.mark.parametrize('first', ['converse_plugin', 'realesrgan'])
def test_plugin_and_realesrgan_in_either_order(first):
    order = 'converse_plugin, realesrgan' if first == 'converse_plugin' else 'realesrgan, converse_plugin'
    code = (f'import {order};'
            'from converse_plugin.registries import lookup;'
            'from realesrgan.archs.srvgg_arch import SRVGGNetCompact;'
            'from realesrgan.models.realesrgan_model import RealESRGANModel;'
            "assert lookup('network', 'SRVGGNetCompact') is SRVGGNetCompact;"
            "assert lookup('model', 'RealESRGANModel') is RealESRGANModel;"
            "assert lookup('network', 'SRVGGNetCompact_basicsr') is not SRVGGNetCompact;"
            "assert lookup('network', 'ConverseDnCNN').__module__.startswith('converse_plugin')")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _tiny(tmp_path, **extra) -> list[str]:
    data = make_images(str(tmp_path / 'images'), n=4, size=32)
    overrides = tiny_overrides(**{
        'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data,
        'network_g:network:num_feat': 4, 'network_g:network:num_conv': 1, 'network_d:num_feat': 4,
        'train:total_iter': 2, 'val:val_freq': 2, 'datasets:train:gt_size': 16, 'train:perceptual_opt': None,
        **extra})
    return [o for o in overrides if not o.startswith(('network_g:num_feat', 'network_g:num_block'))]


@pytest.mark.slow
@realesrgan_missing
@pytest.mark.parametrize('how', ['flag', 'option_file'])
def test_train_imports_realesrgan_before_parsing(tmp_path, how):
    """Once realesrgan is loaded (by flag or by the option file's ``imports:``), the plain name SRVGGNetCompact
    resolves to realesrgan's class, as BasicSR's registry resolves it, and a GAN training with that generator
    converted by the plugin runs. (realesrgan's own RealESRGANModel needs CUDA: see the next test.)"""
    script = tmp_path / 'report_classes.py'
    script.write_text(REPORT_CLASSES)
    args = ['train', '-opt', train_options(OPTION), '--root', str(tmp_path / 'root'),
            '--force_yml', *_tiny(tmp_path, model_type='SRGANModel')]
    if how == 'flag':
        args[1:1] = ['--import', 'realesrgan']
    else:
        option = tmp_path / 'with_imports.yml'
        option.write_text('imports: [realesrgan]\n' + open(train_options(OPTION), encoding='utf-8').read())
        args[args.index('-opt') + 1] = str(option)
    out = check_ok(run_cli(args, cwd=str(tmp_path), script=str(script)))
    assert 'network SRVGGNetCompact: realesrgan.archs.srvgg_arch' in out  # realesrgan's, not BasicSR's copy
    assert 'End of training' in out


# prints which class the plain names resolve to once the options were parsed (realesrgan imported by then)
REPORT_CLASSES = '''
import sys
from converse_plugin.cli import main
from converse_plugin.engine import train as engine_train
from converse_plugin.registries import lookup

_validate = engine_train.validate_options

def validate_options(opt, file, is_train):
    print('network SRVGGNetCompact:', lookup('network', 'SRVGGNetCompact').__module__, flush=True)
    return _validate(opt, file, is_train)

engine_train.validate_options = validate_options
sys.exit(main())
'''


@realesrgan_missing
def test_a_model_that_cannot_run_here_is_a_clear_error(tmp_path):
    """realesrgan's RealESRNetModel moves its degradation modules to CUDA in __init__: on a CPU machine the
    command ends with one line naming model_type, not a traceback."""
    args = ['train', '--import', 'realesrgan', '-opt', train_options(OPTION), '--root', str(tmp_path / 'root'),
            '--force_yml', *_tiny(tmp_path, model_type='RealESRNetModel')]
    proc = run_cli(args, cwd=str(tmp_path))
    if proc.returncode == 0:
        pytest.skip('RealESRNetModel built: this machine has CUDA')
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "model_type 'RealESRNetModel': the model could not be built" in proc.stdout, proc.stdout[-2000:]
    assert 'needs a CUDA device' in proc.stdout
    assert 'Traceback' not in proc.stdout


def test_import_of_a_missing_plugin_is_a_clear_error(tmp_path):
    proc = run_cli(['train', '--import', 'no_such_plugin_xyz', '-opt', train_options(OPTION)], cwd=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout.startswith('basicsr train: error: ') and proc.stdout.count('\n') == 1, proc.stdout
    assert "--import: cannot import 'no_such_plugin_xyz'" in proc.stdout
    assert 'Traceback' not in proc.stdout
