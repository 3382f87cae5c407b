"""The command line: ``basicsr train|test`` flags, safe option parsing, ``--force_yml``, ``--root``."""
from __future__ import annotations

import subprocess
import sys
from os import path as osp

import pytest
import torch

import converse_plugin  # noqa: F401  (patches BasicSR before it is imported)
from converse_plugin import cli  # noqa: E402  isort: skip
from converse_plugin.engine import options  # noqa: E402  isort: skip
from converse_plugin.engine.options import OptionError, apply_force_yml, load_options, parse_options  # noqa: E402

MINIMAL = """\
name: tiny
model_type: SRModel
num_gpu: 0
manual_seed: 3
datasets:
  train:
    name: a
    type: GaussianNoiseDataset
    dataroot_gt: ~/data
  val:
    name: b
    type: GaussianNoiseDataset
    dataroot_gt: data/val
network_g:
  type: ConverseDnCNN
  num_feat: 8
path:
  pretrain_network_g: ~
train:
  ema_decay: 0.999
  optim_g:
    type: Adam
    lr: !!float 2e-4
  scheduler:
    type: MultiStepLR
    milestones: [10, 20]
val:
  val_freq: 5
logger:
  print_freq: 1
"""


@pytest.fixture
def option_file(tmp_path):
    path = tmp_path / 'opt.yml'
    path.write_text(MINIMAL)
    return str(path)


def test_usage_lists_the_commands(capsys):
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ('train', 'test', 'demo'))
    assert cli.main(['nope']) == 2


@pytest.mark.parametrize('flag', ['--local-rank', '--local_rank'])
def test_local_rank_both_spellings(flag, option_file):
    args = options.build_parser().parse_args(['-opt', option_file, flag, '3'])
    assert args.local_rank == 3


def test_basicsr_flags(option_file):
    args = options.build_parser(is_train=True).parse_args(
        ['-opt', option_file, '--launcher', 'slurm', '--auto_resume', '--debug', '--force_yml', 'a=1', 'b:c=2'])
    assert (args.launcher, args.auto_resume, args.debug, args.force_yml) == ('slurm', True, True, ['a=1', 'b:c=2'])
    with pytest.raises(SystemExit):
        options.build_parser().parse_args(['-opt', option_file, '--launcher', 'mpi'])


def test_load_keeps_order_and_basicsr_types(option_file):
    opt = load_options(option_file)
    assert list(opt) == ['name', 'model_type', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train',
                         'val', 'logger']
    assert list(opt['datasets']) == ['train', 'val']
    assert opt['train']['optim_g']['lr'] == 2e-4 and isinstance(opt['train']['optim_g']['lr'], float)
    assert opt['path']['pretrain_network_g'] is None


def test_python_tags_are_rejected_without_running_them(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.yml'
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nnum_gpu: 0\n")
    with pytest.raises(OptionError) as err:
        load_options(str(path))
    assert str(path) in str(err.value) and '!!python' in str(err.value) and 'line 1' in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize('text, problem', [
    ('name: a\nname: b\n', 'duplicate key'),
    ('name: [unclosed\n', 'not valid YAML'),
    ('- a\n- b\n', 'mapping'),
])
def test_bad_files_name_the_file(tmp_path, text, problem):
    path = tmp_path / 'bad.yml'
    path.write_text(text)
    with pytest.raises(OptionError, match=problem) as err:
        load_options(str(path))
    assert str(path) in str(err.value)


def test_missing_file():
    with pytest.raises(OptionError, match='option file not found: /no/such.yml'):
        load_options('/no/such.yml')


def test_force_yml_values_are_parsed_safely(option_file, tmp_path):
    opt = load_options(option_file)
    marker = tmp_path / 'pwned'
    apply_force_yml(opt, [
        'train:ema_decay=0.99', 'train:optim_g:lr=1e-3', 'train:scheduler:milestones=[1, 2]',
        'val:val_freq=!!float 1e3',
        'path:pretrain_network_g=a/b=c.pth', 'network_g:num_feat=none', 'logger:print_freq=true',
        f"name=__import__('os').system('touch {marker}')",
    ])
    assert opt['train']['ema_decay'] == 0.99
    assert opt['train']['optim_g']['lr'] == 1e-3  # YAML 1.1 alone would leave '1e-3' a string
    assert opt['train']['scheduler']['milestones'] == [1, 2]
    assert opt['val']['val_freq'] == 1000.0
    assert opt['path']['pretrain_network_g'] == 'a/b=c.pth'  # only the first '=' splits
    assert opt['network_g']['num_feat'] is None
    assert opt['logger']['print_freq'] is True
    assert opt['name'].startswith('__import__')  # a string, never evaluated
    assert not marker.exists()


@pytest.mark.parametrize('entry, message', [
    ('train:ema_decy=0.9', "key 'ema_decy' not found under train"),
    ('nope:x=1', "key 'nope' not found under the top level"),
    ('name:x=1', 'name is a str, not a mapping'),
    ('train:ema_decay', 'must look like key:subkey=value'),
])
def test_force_yml_errors_name_the_key(option_file, entry, message):
    with pytest.raises(OptionError, match=message):
        apply_force_yml(load_options(option_file), [entry])


def test_parse_options_root_paths_and_force(option_file, tmp_path):
    root = tmp_path / 'out'
    opt, args = parse_options('/ignored', is_train=True, argv=[
        '-opt', option_file, '--root', str(root), '--force_yml', 'manual_seed=7', 'train:ema_decay=0'])
    exp = osp.join(str(root), 'experiments', 'tiny')
    assert opt['path']['experiments_root'] == exp and opt['root_path'] == str(root)
    assert opt['path']['training_states'] == osp.join(exp, 'training_states')
    assert (opt['dist'], opt['rank'], opt['world_size']) == (False, 0, 1)
    assert opt['manual_seed'] == 7 and opt['train']['ema_decay'] == 0
    assert opt['datasets']['train']['phase'] == 'train' and opt['datasets']['val']['phase'] == 'val'
    assert opt['datasets']['train']['dataroot_gt'] == osp.expanduser('~/data')
    assert opt['is_train'] and not opt['auto_resume']

    opt, _ = parse_options(str(tmp_path / 'default'), is_train=False, argv=['-opt', option_file, '--debug'])
    assert opt['path']['results_root'] == osp.join(str(tmp_path / 'default'), 'results', 'debug_tiny')


def test_parse_options_resolves_a_relative_root(option_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt, _ = parse_options('/ignored', argv=['-opt', option_file, '--root', 'rel'])
    assert opt['root_path'] == str(tmp_path / 'rel')


def test_missing_required_keys_are_named(tmp_path):
    path = tmp_path / 'opt.yml'
    path.write_text('name: x\nnum_gpu: 0\ndatasets: {}\npath: {}\n')
    with pytest.raises(OptionError, match='missing top-level option.*train, logger'):
        parse_options(str(tmp_path), is_train=True, argv=['-opt', str(path)])
    with pytest.raises(OptionError, match='missing top-level option.*val'):
        parse_options(str(tmp_path), is_train=False, argv=['-opt', str(path)])


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message for a machine without CUDA')
def test_num_gpu_without_cuda_is_an_error(option_file):
    with pytest.raises(OptionError, match='num_gpu is 1 but no CUDA device'):
        parse_options('/tmp', argv=['-opt', option_file, '--force_yml', 'num_gpu=1'])
    opt, _ = parse_options('/tmp', argv=['-opt', option_file, '--force_yml', 'num_gpu=auto'])
    assert opt['num_gpu'] == 0


def test_train_command_reports_option_errors(tmp_path, capsys):
    from converse_plugin.cli import test as test_tool
    from converse_plugin.cli import train as train_tool
    assert train_tool.main(['-opt', str(tmp_path / 'missing.yml')]) == 2
    assert 'basicsr train: error: option file not found' in capsys.readouterr().err
    assert test_tool.main(['-opt', str(tmp_path / 'missing.yml')]) == 2
    assert 'basicsr test: error' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_tool.main(['--auto_resume'])  # -opt is required: argparse's usage error


def test_python_m_converse_plugin_help():
    proc = subprocess.run([sys.executable, '-m', 'converse_plugin', 'train', '-h'], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    for flag in ('-opt', '--launcher', '--auto_resume', '--debug', '--force_yml', '--local_rank', '--local-rank',
                 '--root'):
        assert flag in proc.stdout
