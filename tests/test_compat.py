"""The BasicSR patches of converse_plugin.compat, each checked for the behaviour it promises."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

import converse_plugin  # noqa: F401  (first: applies the patches)
import basicsr  # noqa: E402  isort: skip
import basicsr.test  # noqa: E402  isort: skip
import basicsr.train  # noqa: E402  isort: skip
import basicsr.utils.options  # noqa: E402  isort: skip
from basicsr.models.base_model import BaseModel  # noqa: E402  isort: skip
from basicsr.utils import dist_util  # noqa: E402  isort: skip
from converse_plugin import compat  # noqa: E402  isort: skip
from converse_plugin.tools import options  # noqa: E402  isort: skip

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU code path')


def test_import_plugin_then_basicsr_in_a_fresh_interpreter():
    code = ('import converse_plugin, basicsr, basicsr.train, basicsr.test;'
            'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY;'
            "assert 'ConverseDnCNN' in ARCH_REGISTRY and 'ConverseDeblurModel' in MODEL_REGISTRY;"
            "assert 'GaussianNoiseDataset' in DATASET_REGISTRY;"
            "assert basicsr.train.parse_options.__module__ == 'converse_plugin.tools.options'")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_docstring_lists_every_patch():
    for number, patch in enumerate(compat.PATCHES, start=1):
        assert f'({"patch"} {number})' in patch.__doc__, patch.__name__
        assert f'\n{number}. ' in compat.__doc__


def test_safe_parse_options_everywhere_and_apply_all_is_idempotent():
    for module in (basicsr.utils.options, basicsr.train, basicsr.test, basicsr):
        assert module.parse_options is options.parse_options, module.__name__
    before = (basicsr.train.train_pipeline, basicsr.test.test_pipeline, basicsr.train.load_resume_state,
              dist_util._init_dist_pytorch, BaseModel.model_to_device)
    compat.apply_all()
    after = (basicsr.train.train_pipeline, basicsr.test.test_pipeline, basicsr.train.load_resume_state,
             dist_util._init_dist_pytorch, BaseModel.model_to_device)
    assert before == after
    assert basicsr.train_pipeline is basicsr.train.train_pipeline


def test_pipelines_take_root_from_the_command_line(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', 'x.yml', '--root', str(tmp_path / 'r')])
    assert options.resolve_root('/default') == str(tmp_path / 'r')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', 'x.yml'])
    assert options.resolve_root('/default') == '/default'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def one_process_group(monkeypatch):
    """A real one-process group started through BasicSR's init_dist('pytorch')."""
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    dist_util.init_dist('pytorch')
    yield
    dist.destroy_process_group()


@no_cuda
def test_init_dist_uses_gloo_without_cuda(one_process_group):
    assert dist.get_backend() == 'gloo'
    assert dist_util.get_dist_info() == (0, 1)


@no_cuda
def test_ddp_on_the_cpu(one_process_group):
    model = BaseModel({'num_gpu': 0, 'is_train': False, 'dist': True})
    net = model.model_to_device(nn.Linear(3, 2))
    assert isinstance(net, nn.parallel.DistributedDataParallel) and net.device_ids is None
    net(torch.ones(4, 3)).sum().backward()  # the gradient all-reduce runs on gloo
    assert model.get_bare_model(net).weight.grad is not None


@no_cuda
def test_cuda_prefetch_mode_falls_back_to_the_cpu_prefetcher():
    loader = torch.utils.data.DataLoader(list(range(3)), batch_size=2)
    with pytest.warns(RuntimeWarning, match="prefetch_mode 'cuda' needs CUDA"):
        prefetcher = basicsr.train.CUDAPrefetcher(loader, {'num_gpu': 0})
    assert prefetcher.next().tolist() == [0, 1]
    assert prefetcher.next().tolist() == [2]
    assert prefetcher.next() is None
    prefetcher.reset()
    assert prefetcher.next().tolist() == [0, 1]


def _states(tmp_path, iters):
    exp = tmp_path / 'root' / 'experiments' / 'run'
    (exp / 'training_states').mkdir(parents=True)
    for it in iters:
        torch.save({'epoch': 1, 'iter': it, 'optimizers': [{'x': torch.ones(2)}], 'schedulers': []},
                   exp / 'training_states' / f'{it}.state')
    opt = {'name': 'run', 'num_gpu': 0, 'network_g': {},
           'path': {'models': str(exp / 'models'), 'training_states': str(exp / 'training_states'),
                    'resume_state': None}}
    return exp, opt


def test_auto_resume_finds_the_latest_state_under_the_root_from_any_directory(tmp_path, monkeypatch):
    exp, opt = _states(tmp_path, [4, 12, 8])
    monkeypatch.chdir(tmp_path)  # BasicSR 1.4.2 would look in ./experiments/run/training_states
    opt['auto_resume'] = True
    state = basicsr.train.load_resume_state(opt)
    assert state['iter'] == 12 and state['optimizers'][0]['x'].device.type == 'cpu'
    assert opt['path']['resume_state'] == str(exp / 'training_states' / '12.state')
    assert opt['path']['pretrain_network_g'] == str(exp / 'models' / 'net_g_12.pth')


def test_auto_resume_without_states_starts_fresh(tmp_path):
    _, opt = _states(tmp_path, [])
    assert basicsr.train.load_resume_state(dict(opt, auto_resume=True)) is None


def test_resume_state_path_loads_on_the_cpu(tmp_path):
    exp, opt = _states(tmp_path, [4, 8])
    opt['path']['resume_state'] = str(exp / 'training_states' / '4.state')
    state = basicsr.train.load_resume_state(dict(opt, auto_resume=False))
    assert state['iter'] == 4
    opt['path']['resume_state'] = str(tmp_path / 'nope.state')
    with pytest.raises(FileNotFoundError, match='nope.state'):
        basicsr.train.load_resume_state(dict(opt, auto_resume=False))

