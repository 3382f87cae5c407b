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
   any working directory. It also loads safely (``weights_only=True``) and, with ``--auto_resume``, takes
   the newest state that loads, skipping a truncated or corrupt one with a warning
   (:func:`converse_plugin.utils.checkpoint.find_resume_state`).
6. Safe option parsing: BasicSR's ``parse_options`` reads YAML with a loader that constructs Python
   objects and applies ``--force_yml`` with ``exec``. It is replaced (in ``basicsr.utils.options``,
   ``basicsr.train``, ``basicsr.test`` and ``basicsr``) by :func:`converse_plugin.tools.options.parse_options`,
   which also adds ``--root`` and ``--local-rank``; ``train_pipeline``/``test_pipeline`` are wrapped so
   that ``--root`` also wins over the ``root_path`` they are called with (BasicSR's pipelines overwrite
   ``opt['root_path']`` with it, and put ``tb_logger/`` there). A user's own ``train.py`` that imports
   ``converse_plugin`` and calls ``basicsr.train.train_pipeline(root)`` gets all of this.

Patches 7-10 make runs robust (nothing lost, no code run from data, clear errors):

7. Atomic network checkpoints: ``BaseModel.save_network`` writes ``torch.save`` straight to
   ``net_g_<iter>.pth``, so a process killed while saving leaves a truncated file. Ours builds the same
   dict and writes it with :func:`converse_plugin.utils.checkpoint.atomic_save` (temporary file in the same
   folder, fsync, ``os.replace``); BasicSR's three retries are kept.
8. Atomic training states with the resume position: ``BaseModel.save_training_state`` likewise writes
   ``<iter>.state`` atomically, and adds ``progress`` (position in the epoch, random states, the dataset's
   generator) when the training loop set ``model.training_progress``, which the plugin's train pipeline
   (patch 10) does before each save. The state still loads with ``weights_only=True``.
9. Safe, checked network loading: ``BaseModel.load_network`` uses ``torch.load`` without ``weights_only``
   (unpickling can run code) and lets a mismatched checkpoint fail inside ``load_state_dict``. Ours loads
   with ``weights_only=True`` (a file that needs more is refused, with how to convert it), and reports
   missing, unexpected and shape-mismatched keys in one :class:`~converse_plugin.utils.errors.CheckpointError`
   (``strict_load: false`` keeps BasicSR's behaviour: warnings, mismatched shapes skipped).
10. Pipelines: ``basicsr.train.train_pipeline`` and ``basicsr.test.test_pipeline`` are replaced by the
   plugin's versions (:mod:`converse_plugin.tools.pipelines`): BasicSR's steps plus option checks before
   anything runs, exact resume (data position and random states), validation that leaves the training
   random states untouched, and a stop on NaN/Inf in the input or the loss; wrapped for ``--root`` as in
   patch 6.
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
    """Resume on the CPU, from any working directory, safely, from the newest complete state (patch 5)."""
    from basicsr.utils import check_resume

    from converse_plugin.utils.checkpoint import find_resume_state, load_training_state

    def load_resume_state(opt: dict):
        """Load the training state to resume from, or return None.

        With ``opt['auto_resume']``: the newest ``<iter>.state`` in ``opt['path']['training_states']`` that
        loads (a corrupt one is skipped with a warning); it sets ``opt['path']['resume_state']``. Otherwise
        ``opt['path']['resume_state']`` if set. Loaded with ``weights_only=True``; tensors are mapped to the
        current CUDA device when the model runs on CUDA, else to the CPU.

        Raises:
            CheckpointNotFoundError: ``path:resume_state`` names a file that does not exist.
            CheckpointError: ``path:resume_state`` is truncated, corrupt or not a training state.
        """
        if opt['num_gpu'] != 0 and torch.cuda.is_available():
            map_location = f'cuda:{torch.cuda.current_device()}'
        else:
            map_location = 'cpu'
        resume_state = None
        if opt['auto_resume']:
            found = find_resume_state(opt['path']['training_states'], _warn_stderr, map_location)
            if found is not None:
                opt['path']['resume_state'], resume_state = found
        elif opt['path'].get('resume_state'):
            resume_state = load_training_state(opt['path']['resume_state'], map_location)
        if resume_state is None:
            return None
        check_resume(opt, resume_state['iter'])
        return resume_state

    _replace('load_resume_state', load_resume_state, ('basicsr.train', 'basicsr'))


def _warn_stderr(message: str) -> None:
    """Warnings from before the pipeline opens its log (BasicSR's logger must not be created earlier)."""
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def patch_safe_options() -> None:
    """Safe ``parse_options`` everywhere BasicSR calls it; ``--root`` for the pipelines (patch 6)."""
    import basicsr
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options

    from converse_plugin.tools import options

    _replace('parse_options', options.parse_options,
             ('basicsr.utils.options', 'basicsr.train', 'basicsr.test', 'basicsr'))

    _replace('train_pipeline', _with_root(basicsr.train.train_pipeline), ('basicsr.train', 'basicsr'))
    _replace('test_pipeline', _with_root(basicsr.test.test_pipeline), ('basicsr.test', 'basicsr'))


def _with_root(pipeline):
    """``pipeline(root_path)`` with ``--root`` from the command line winning over ``root_path``."""
    from converse_plugin.tools import options

    @functools.wraps(pipeline)
    def run(root_path: str):
        return pipeline(options.resolve_root(root_path))  # --root on the command line wins
    return run


def patch_atomic_save_network() -> None:
    """``BaseModel.save_network`` writes through a temporary file and ``os.replace`` (patch 7)."""
    import time

    from basicsr.models.base_model import BaseModel
    from basicsr.utils import get_root_logger
    from basicsr.utils.dist_util import master_only

    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """Save ``net`` (or a list of nets under the matching ``param_key`` list) as
        ``<models>/<net_label>_<iter|latest>.pth``, atomically; parameters on the CPU, no ``module.``."""
        current_iter = 'latest' if current_iter == -1 else current_iter
        save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth')
        nets = net if isinstance(net, list) else [net]
        param_keys = param_key if isinstance(param_key, list) else [param_key]
        assert len(nets) == len(param_keys), 'The lengths of net and param_key should be the same.'
        save_dict = {}
        for net_, param_key_ in zip(nets, param_keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[param_key_] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state_dict.items()}
        _save_with_retries(save_dict, save_path, 'model', get_root_logger, time.sleep)

    BaseModel.save_network = save_network


def _save_with_retries(obj, path: str, what: str, get_logger, sleep) -> None:
    """BasicSR's three tries, each one atomic; a final failure is logged (as BasicSR does), not raised."""
    from converse_plugin.utils.checkpoint import atomic_save

    for remaining in (2, 1, 0):
        try:
            atomic_save(obj, path)
            return
        except Exception as err:  # noqa: BLE001 (BasicSR's behaviour: a failed save must not end training)
            get_logger().warning(f'Save {what} error: {err}, remaining retry times: {remaining}')
            if remaining:
                sleep(1)
    get_logger().warning(f'Still cannot save {path}. Just ignore it.')


def patch_atomic_save_training_state() -> None:
    """``BaseModel.save_training_state``: atomic, plus the resume position set by the loop (patch 8)."""
    import time

    from basicsr.models.base_model import BaseModel
    from basicsr.utils import get_root_logger
    from basicsr.utils.dist_util import master_only

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """Save ``<training_states>/<iter>.state`` atomically: epoch, iter, optimizers, schedulers,
        ``progress`` (``self.training_progress``, set by the plugin's training loop) when present, and the
        entries of ``self.extra_training_state()`` when the model defines it."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        progress = getattr(self, 'training_progress', None)
        if progress is not None:
            state['progress'] = progress
        extra = getattr(self, 'extra_training_state', None)  # e.g. the GradScaler of train:amp fp16
        if callable(extra):
            state.update(extra())
        save_path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
        _save_with_retries(state, save_path, 'training state', get_root_logger, time.sleep)

    BaseModel.save_training_state = save_training_state


def patch_safe_load_network() -> None:
    """``BaseModel.load_network`` with ``weights_only=True`` and one message for mismatched keys (patch 9)."""
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import get_root_logger

    from converse_plugin.utils.checkpoint import load_network_params, mismatch_message, state_dict_mismatch
    from converse_plugin.utils.errors import CheckpointError

    def load_network(self, net, load_path: str, strict: bool = True, param_key='params') -> None:
        """Load ``load_path`` (entry ``param_key``; None: the file is the state dict) into ``net``.

        Raises:
            CheckpointNotFoundError, CheckpointError: missing, truncated, unsafe or not a checkpoint; no
                ``param_key`` entry; with ``strict``, keys or shapes that do not match (all listed).
        """
        logger = get_root_logger()
        net = self.get_bare_model(net)
        if str(load_path).endswith('.safetensors'):  # a plain state dict; loading runs no code (checkpoint_io)
            from converse_plugin.utils.checkpoint_io import load_state_dict_file
            params, used_key = load_state_dict_file(load_path), param_key
        else:
            params, used_key = load_network_params(load_path, param_key)
        if used_key != param_key:
            logger.info(f'Loading: {param_key} does not exist, use {used_key}.')
        logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{used_key}].')
        expected = net.state_dict()
        diff = state_dict_mismatch(expected, params)
        if strict and any(diff.values()):
            raise CheckpointError(mismatch_message(load_path, net.__class__.__name__, diff))
        if not strict:
            for key in diff['missing'] + diff['unexpected']:
                logger.warning(f'Key not loaded (strict_load false): {key}')
            for key, got, want in diff['mismatched']:
                logger.warning(f'Size different, ignore [{key}]: crt_net: {want}; load_net: {got}')
                params.pop(key)
        net.load_state_dict(params, strict=strict)

    BaseModel.load_network = load_network


def patch_pipelines() -> None:
    """The plugin's train and test pipelines in place of BasicSR's (patch 10)."""
    import basicsr.test
    import basicsr.train

    from converse_plugin.tools import pipelines

    _replace('train_pipeline', _with_root(pipelines.train_pipeline), ('basicsr.train', 'basicsr'))
    _replace('test_pipeline', _with_root(pipelines.test_pipeline), ('basicsr.test', 'basicsr'))


PATCHES = (patch_torchvision_functional_tensor, patch_dist_init_cpu, patch_ddp_device_ids,
           patch_cuda_prefetcher_fallback, patch_load_resume_state, patch_safe_options, patch_atomic_save_network,
           patch_atomic_save_training_state, patch_safe_load_network, patch_pipelines)


def apply_all() -> None:
    """Apply every patch once, in order. Safe to call repeatedly."""
    for patch in PATCHES:
        if patch.__name__ not in _APPLIED:
            patch()
            _APPLIED.add(patch.__name__)
