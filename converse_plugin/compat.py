"""Every patch the plugin applies to BasicSR 1.4.2 or torchvision, in one place.

Each patch is idempotent, explained where it is defined, and applied by :func:`apply_all`, which
``converse_plugin/__init__.py`` calls *before* anything imports :mod:`basicsr`.

1. ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17. BasicSR 1.4.2 imports
   ``rgb_to_grayscale`` from it at import time (``basicsr/data/degradations.py``), so ``import basicsr``
   fails with current torchvision. We register an alias module that re-exports
   ``torchvision.transforms.functional`` (which has had ``rgb_to_grayscale`` since 0.8).

Patches 2-6 import BasicSR (after patch 1 made that possible) and replace a few of its functions in the
modules that use them. They keep BasicSR's behaviour on a CUDA machine and fix what breaks elsewhere:

2. Distributed start on the CPU: ``basicsr.utils.dist_util._init_dist_pytorch`` / ``_init_dist_slurm``
   always call ``torch.cuda.set_device`` and use NCCL. Ours pick the device from ``LOCAL_RANK`` and use
   NCCL when CUDA is available, and the gloo backend (no ``set_device``) otherwise.
3. DistributedDataParallel on the CPU: ``BaseModel.model_to_device`` passes
   ``device_ids=[torch.cuda.current_device()]``, which fails without CUDA; ours passes device ids only
   for a CUDA model.
4. ``prefetch_mode: cuda`` without CUDA: ``basicsr.train`` builds a ``CUDAPrefetcher``, which needs
   CUDA streams; without CUDA it now falls back to the CPU prefetcher, with a warning.
5. Resuming (``--auto_resume``, ``path.resume_state``): ``basicsr.train.load_resume_state`` maps the
   state to ``torch.cuda.current_device()`` (fails on the CPU) and looks for ``experiments/<name>/
   training_states`` relative to the *current directory*. Ours maps to the model's device and looks in
   ``opt['path']['training_states']`` (under the root folder), so resuming works on the CPU and from
   any working directory.
6. Safe option parsing: BasicSR's ``parse_options`` reads YAML with a loader that constructs Python
   objects and applies ``--force_yml`` with ``exec``. It is replaced (in ``basicsr.utils.options``,
   ``basicsr.train``, ``basicsr.test`` and ``basicsr``) by :func:`converse_plugin.tools.options.parse_options`,
   which also adds ``--root`` and ``--local-rank``; ``train_pipeline``/``test_pipeline`` are wrapped so
   that ``--root`` also wins over the ``root_path`` they are called with (BasicSR's pipelines overwrite
   ``opt['root_path']`` with it, and put ``tb_logger/`` there). A user's own ``train.py`` that imports
   ``converse_plugin`` and calls ``basicsr.train.train_pipeline(root)`` gets all of this.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import types
import warnings

import torch

_APPLIED: set[str] = set()


def patch_torchvision_functional_tensor() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work again (patch 1)."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return  # old torchvision: nothing to do
    except ImportError:
        pass
    import torchvision.transforms.functional as F

    shim = types.ModuleType(name)
    shim.__doc__ = 'converse_plugin shim: alias of torchvision.transforms.functional (see converse_plugin.compat).'
    for attr in dir(F):
        if not attr.startswith('__'):
            setattr(shim, attr, getattr(F, attr))
    sys.modules[name] = shim
    import torchvision.transforms as T
    T.functional_tensor = shim


def _replace(name: str, new, modules: tuple[str, ...]) -> None:
    """Set ``module.name = new`` in each module that holds BasicSR's original (``from x import name``
    copies the function into the importing module, so each copy is replaced)."""
    original = getattr(importlib.import_module(modules[0]), name)
    for module_name in modules:
        module = importlib.import_module(module_name)
        if getattr(module, name, None) is original:
            setattr(module, name, new)


def _dist_backend(backend: str) -> str:
    """NCCL needs CUDA: without it, use gloo (the CPU backend)."""
    return backend if torch.cuda.is_available() else 'gloo'


def patch_dist_init_cpu() -> None:
    """Distributed start with gloo on the CPU, NCCL and ``set_device`` with CUDA (patch 2)."""
    import subprocess

    import torch.distributed as dist
    from basicsr.utils import dist_util

    def _init_dist_pytorch(backend: str, **kwargs) -> None:
        """torchrun / torch.distributed.launch: RANK, WORLD_SIZE, MASTER_* come from the environment."""
        if torch.cuda.is_available():
            local_rank = int(os.environ.get('LOCAL_RANK', int(os.environ['RANK'])))
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(backend=_dist_backend(backend), **kwargs)

    def _init_dist_slurm(backend: str, port: int | None = None) -> None:
        """srun: rank and world size from SLURM_*; MASTER_PORT from ``port``, the environment or 29500."""
        proc_id = int(os.environ['SLURM_PROCID'])
        if torch.cuda.is_available():
            local_rank = proc_id % torch.cuda.device_count()
            torch.cuda.set_device(local_rank)
        else:
            local_rank = int(os.environ.get('SLURM_LOCALID', 0))
        addr = subprocess.getoutput(f"scontrol show hostname {os.environ['SLURM_NODELIST']} | head -n1")
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')  # torch.distributed's default port
        os.environ['MASTER_ADDR'] = addr
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = str(local_rank)
        os.environ['RANK'] = str(proc_id)
        dist.init_process_group(backend=_dist_backend(backend))

    dist_util._init_dist_pytorch = _init_dist_pytorch  # init_dist looks both up in this module
    dist_util._init_dist_slurm = _init_dist_slurm


def patch_ddp_device_ids() -> None:
    """``BaseModel.model_to_device`` without CUDA device ids for a CPU model (patch 3)."""
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    def model_to_device(self, net):
        """Move ``net`` to ``self.device``; wrap it in DistributedDataParallel (distributed runs) or
        DataParallel (several GPUs, one process). Device ids are given only for a CUDA model."""
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    BaseModel.model_to_device = model_to_device


def patch_cuda_prefetcher_fallback() -> None:
    """``prefetch_mode: cuda`` falls back to the CPU prefetcher when CUDA is unavailable (patch 4)."""
    import basicsr.train
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher

    def cuda_prefetcher(loader, opt):
        """BasicSR's CUDAPrefetcher, or its CPUPrefetcher (with a warning) when CUDA is unavailable."""
        if torch.cuda.is_available():
            return CUDAPrefetcher(loader, opt)
        warnings.warn("prefetch_mode 'cuda' needs CUDA, which is not available: using the CPU prefetcher",
                      RuntimeWarning, stacklevel=2)
        return CPUPrefetcher(loader)

    basicsr.train.CUDAPrefetcher = cuda_prefetcher


def patch_load_resume_state() -> None:
    """Resume on the CPU and from any working directory (patch 5)."""
    from basicsr.utils import check_resume, scandir

    def load_resume_state(opt: dict):
        """Load the training state to resume from, or return None.

        With ``opt['auto_resume']``: the latest ``<iter>.state`` in ``opt['path']['training_states']``
        (which sets ``opt['path']['resume_state']``); otherwise ``opt['path']['resume_state']`` if set.
        Tensors are mapped to the current CUDA device when the model runs on CUDA, else to the CPU.
        """
        resume_state_path = None
        if opt['auto_resume']:
            state_path = opt['path']['training_states']
            if os.path.isdir(state_path):
                states = [float(v.split('.state')[0]) for v in scandir(state_path, suffix='state')]
                if states:
                    resume_state_path = os.path.join(state_path, f'{max(states):.0f}.state')
                    opt['path']['resume_state'] = resume_state_path
        elif opt['path'].get('resume_state'):
            resume_state_path = opt['path']['resume_state']
        if resume_state_path is None:
            return None
        if not os.path.isfile(resume_state_path):
            raise FileNotFoundError(f'path:resume_state: no training state at {resume_state_path}')
        if opt['num_gpu'] != 0 and torch.cuda.is_available():
            map_location = f'cuda:{torch.cuda.current_device()}'
        else:
            map_location = 'cpu'
        resume_state = torch.load(resume_state_path, map_location=map_location)
        check_resume(opt, resume_state['iter'])
        return resume_state

    _replace('load_resume_state', load_resume_state, ('basicsr.train', 'basicsr'))


def patch_safe_options() -> None:
    """Safe ``parse_options`` everywhere BasicSR calls it; ``--root`` for the pipelines (patch 6)."""
    import basicsr
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options

    from converse_plugin.tools import options

    _replace('parse_options', options.parse_options,
             ('basicsr.utils.options', 'basicsr.train', 'basicsr.test', 'basicsr'))

    def with_root(pipeline):
        @functools.wraps(pipeline)
        def run(root_path: str):
            return pipeline(options.resolve_root(root_path))  # --root on the command line wins
        return run

    _replace('train_pipeline', with_root(basicsr.train.train_pipeline), ('basicsr.train', 'basicsr'))
    _replace('test_pipeline', with_root(basicsr.test.test_pipeline), ('basicsr.test', 'basicsr'))


PATCHES = (patch_torchvision_functional_tensor, patch_dist_init_cpu, patch_ddp_device_ids,
           patch_cuda_prefetcher_fallback, patch_load_resume_state, patch_safe_options)


def apply_all() -> None:
    """Apply every patch once, in order. Safe to call repeatedly."""
    for patch in PATCHES:
        if patch.__name__ not in _APPLIED:
            patch()
            _APPLIED.add(patch.__name__)
