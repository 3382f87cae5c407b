"""The environment fixes of converse_plugin.compat, and the engine pieces that replaced BasicSR patches
(distributed start on CPUs, DDP on CPUs, the CUDA prefetcher fallback, resuming from any directory)."""
from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

import converse_plugin  # noqa: F401  (first: applies the environment fixes)
from basicsr.models.base_model import BaseModel  # noqa: E402  isort: skip
from basicsr.utils import dist_util  # noqa: E402  isort: skip
from converse_plugin import compat  # noqa: E402  isort: skip
from converse_plugin.engine.build import make_prefetcher  # noqa: E402  isort: skip
from converse_plugin.engine.dist import init_dist, local_rank  # noqa: E402  isort: skip
from converse_plugin.engine.resume import load_resume_state  # noqa: E402  isort: skip
from converse_plugin.models.base_model import PluginModel, plugin_model_class  # noqa: E402  isort: skip

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU code path')


def test_import_plugin_then_basicsr_in_a_fresh_interpreter():
    code = ('import converse_plugin, basicsr, basicsr.train, basicsr.test;'
            'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY;'
            "assert 'ConverseDnCNN' in ARCH_REGISTRY and 'ConverseModel' in MODEL_REGISTRY;"
            "assert 'ConverseDeblurModel' in MODEL_REGISTRY and 'GaussianNoiseDataset' in DATASET_REGISTRY;"
            "import torchvision.transforms.functional_tensor as ft; assert callable(ft.rgb_to_grayscale)")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_basicsr_is_not_patched():
    """compat holds environment fixes only: BasicSR's functions and BaseModel's methods are its own."""
    import basicsr.train
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel as Base

    for function in (basicsr.train.train_pipeline, basicsr.train.load_resume_state, basicsr.utils.options.parse_options,
                     dist_util._init_dist_pytorch, Base.save_network, Base.load_network, Base.model_to_device,
                     Base.save_training_state):
        assert function.__module__.startswith('basicsr.'), function


def test_docstring_lists_every_fix_and_apply_all_is_idempotent():
    for number, fix in enumerate(compat.FIXES, start=1):
        assert f'(fix {number})' in fix.__doc__, fix.__name__
        assert f'\n{number}. ' in compat.__doc__
    before = sys.modules[compat.ALIAS]
    compat.apply_all()
    assert sys.modules[compat.ALIAS] is before


def test_compat_imports_nothing_of_the_plugin():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(compat))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith(('converse_plugin', 'basicsr'))], names


def test_plugin_model_class_mixes_in_once_and_keeps_the_name():
    mixed = plugin_model_class(BaseModel)
    assert issubclass(mixed, PluginModel) and issubclass(mixed, BaseModel) and mixed.__name__ == 'BaseModel'
    assert plugin_model_class(BaseModel) is mixed and plugin_model_class(mixed) is mixed


def test_local_rank_from_torchrun_or_slurm(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    monkeypatch.delenv('SLURM_LOCALID', raising=False)
    assert local_rank() == 0
    monkeypatch.setenv('SLURM_LOCALID', '3')
    assert local_rank() == 3
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert local_rank() == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def one_process_group(monkeypatch):
    """A real one-process group started through the engine's init_dist('pytorch')."""
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    init_dist('pytorch')
    yield
    dist.destroy_process_group()


@no_cuda
def test_init_dist_uses_gloo_without_cuda(one_process_group):
    assert dist.get_backend() == 'gloo'
    assert dist_util.get_dist_info() == (0, 1)


@no_cuda
def test_plugin_model_wraps_ddp_on_the_cpu(one_process_group):
    model = plugin_model_class(BaseModel)({'num_gpu': 0, 'is_train': False, 'dist': True})
    net = model.model_to_device(nn.Linear(3, 2))
    assert isinstance(net, nn.parallel.DistributedDataParallel) and net.device_ids is None
    net(torch.ones(4, 3)).sum().backward()  # the gradient all-reduce runs on gloo
    assert model.get_bare_model(net).weight.grad is not None


@no_cuda
def test_cuda_prefetch_mode_falls_back_to_the_cpu_prefetcher():
    loader = torch.utils.data.DataLoader(list(range(3)), batch_size=2)
    with pytest.warns(RuntimeWarning, match="prefetch_mode 'cuda' needs CUDA"):
        prefetcher = make_prefetcher({'datasets': {'train': {'prefetch_mode': 'cuda'}}, 'num_gpu': 0}, loader,
                                     logging.getLogger('test'))
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
    state = load_resume_state(opt)
    assert state['iter'] == 12 and state['optimizers'][0]['x'].device.type == 'cpu'
    assert opt['path']['resume_state'] == str(exp / 'training_states' / '12.state')
    assert opt['path']['pretrain_network_g'] == str(exp / 'models' / 'net_g_12.pth')


def test_auto_resume_without_states_starts_fresh(tmp_path):
    _, opt = _states(tmp_path, [])
    assert load_resume_state(dict(opt, auto_resume=True)) is None


def test_resume_state_path_loads_on_the_cpu(tmp_path):
    exp, opt = _states(tmp_path, [4, 8])
    opt['path']['resume_state'] = str(exp / 'training_states' / '4.state')
    state = load_resume_state(dict(opt, auto_resume=False))
    assert state['iter'] == 4
    opt['path']['resume_state'] = str(tmp_path / 'nope.state')
    with pytest.raises(FileNotFoundError, match='nope.state'):
        load_resume_state(dict(opt, auto_resume=False))



HOOK_CHECK = '''
import site, sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != 'ConverseFunctionalTensorAlias']
try:
    import torchvision.transforms.functional_tensor
    has_real_module = True
except ImportError:
    has_real_module = False
site.addsitedir(sys.argv[1])  # runs the .pth line as Python does at start-up
site.addsitedir(sys.argv[1])  # twice: still one finder
assert [type(f).__name__ for f in sys.meta_path].count('ConverseFunctionalTensorAlias') == 1
assert 'converse_plugin' not in sys.modules and 'basicsr' not in sys.modules  # costs nothing until used
import torchvision.transforms.functional as F
import torchvision.transforms.functional_tensor as ft
assert has_real_module or ft.rgb_to_grayscale is F.rgb_to_grayscale
import basicsr.data.degradations  # imports rgb_to_grayscale from it
print('ok')
'''


def test_startup_hook_makes_the_alias_for_modules_imported_before_the_plugin(tmp_path):
    (tmp_path / compat.STARTUP_HOOK_FILE).write_text(compat.startup_hook_line())
    proc = subprocess.run([sys.executable, '-c', HOOK_CHECK, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-3000:]


def test_install_startup_hook_writes_the_line(tmp_path):
    path = compat.install_startup_hook(str(tmp_path))
    assert path == str(tmp_path / compat.STARTUP_HOOK_FILE)
    text = (tmp_path / compat.STARTUP_HOOK_FILE).read_text()
    assert text == compat.startup_hook_line() and text.startswith('import ') and text.count('\n') == 1
