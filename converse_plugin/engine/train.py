"""The plugin's training loop (``basicsr train``), written for the plugin on BasicSR's public API.

It follows BasicSR 1.4.2's ``train_pipeline`` (same folders, same log lines, same model API: a user's
BasicSR option file runs unchanged) and adds:

- **early checks**: :func:`~converse_plugin.engine.validate.validate_options` right after the options are
  parsed, before any folder is made or data loaded;
- **exact resume**: each training state records the loop position (:class:`Progress`: batch in the
  epoch, the torch random state at the start of the epoch, which seeds the DataLoader's workers, the
  global random states and the training dataset's generator), passed explicitly to ``model.save``. A
  resumed run re-creates the epoch's iterator from the same state, skips the batches already used and
  restores the states, so it continues bit-identically (BasicSR restarts the epoch from its first batch).
  Validation draws the random numbers BasicSR's validation draws; where a checkpoint and a validation fall
  on the same iteration, the validation runs first, so that the saved states follow it;
- **NaN/Inf guard**: a non-finite batch or loss stops training (:mod:`converse_plugin.engine.guards`);
- the model is built with the plugin's checkpoint policy (:func:`converse_plugin.engine.build.build_model`);
- on the CPU, glibc keeps freed memory for the next step (``train: cpu_allocator``,
  :mod:`converse_plugin.engine.allocator`) and, for files that use the plugin's models or networks, denormals
  are flushed to zero (``train: flush_denormal``, :mod:`converse_plugin.engine.denormals`; the caller's mode
  comes back when training returns).

A file that sets none of the plugin's keys and uses none of its types gets BasicSR's run: the same random
numbers, losses, metrics and files (``tests/conformance`` runs BasicSR's pipeline beside this one).

A user's own ``train.py`` calls :func:`train_pipeline` with its folder, as with BasicSR's.
"""
from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import path as osp
from types import SimpleNamespace
from typing import Any

import torch

from converse_plugin.engine.allocator import setup_cpu_allocator
from converse_plugin.engine.build import build_model, make_prefetcher
from converse_plugin.engine.denormals import preserved_denormal_mode, setup_flush_denormal
from converse_plugin.engine.dist import (barrier, check_same_options, gather_to_all, shared_store_warning,
                                         watch_collectives)
from converse_plugin.engine.distributed_eval import validate
from converse_plugin.engine.guards import check_finite_batch, check_finite_losses
from converse_plugin.engine.logs import start_log
from converse_plugin.engine.options import copy_option_file, parse_options
from converse_plugin.engine.preemption import Preempted, Preemption
from converse_plugin.engine.resume import load_resume_state
from converse_plugin.engine.rng import capture_rng_state, restore_rng_state
from converse_plugin.engine.validate import validate_options
from converse_plugin.engine.watchdog import peer_failures_reported, waiting, working
from converse_plugin.errors import OptionError
from converse_plugin.registries import uses_plugin_types

__all__ = ['train_pipeline', 'Progress']


@dataclass
class Progress:
    """Where the loop is inside an epoch, saved with each training state (tensors, ints, lists and tuples
    only, so the state still loads with ``weights_only=True``)."""
    iter_in_epoch: int
    epoch_rng: torch.Tensor
    rng: dict
    dataset_rng: Any = None

    def to_state(self) -> dict:
        return {'iter_in_epoch': self.iter_in_epoch, 'epoch_rng': self.epoch_rng, 'rng': self.rng,
                'dataset_rng': self.dataset_rng}

    @classmethod
    def from_state(cls, state: dict | None, rank: int = 0, world_size: int = 1) -> Progress | None:
        """The position of ``rank``: its own entry of ``per_rank`` (saved by distributed runs: every rank
        draws its own random numbers) when the state was saved with ``world_size`` ranks, else rank 0's."""
        if state is None:
            return None
        per_rank = state.get('per_rank')
        if per_rank and len(per_rank) == world_size:
            state = per_rank[rank]
        return cls(state['iter_in_epoch'], state['epoch_rng'], state['rng'], state.get('dataset_rng'))


def _progress_state(progress: Progress) -> dict:
    """What a training state records of the loop: rank 0's position, and in a distributed run every rank's
    (``per_rank``, gathered from all ranks), so that each rank resumes with its own random states."""
    state = progress.to_state()
    everyone = gather_to_all(state)
    if len(everyone) > 1:
        state['per_rank'] = everyone
    return state


def _dataset_rng(dataset: Any) -> Any:
    get = getattr(dataset, 'get_rng_state', None)
    return get() if callable(get) else None


def _set_dataset_rng(dataset: Any, state: Any) -> None:
    set_state = getattr(dataset, 'set_rng_state', None)
    if state is not None and callable(set_state):
        set_state(state)


class _EpochBatches:
    """The batches of each epoch; the resumed epoch skips the batches the interrupted run used."""

    def __init__(self, loader: Any, sampler: Any, prefetcher: Any) -> None:
        self.loader, self.sampler, self.prefetcher = loader, sampler, prefetcher
        self.epoch_rng: torch.Tensor | None = None
        self.position = 0

    def __call__(self, epoch: int, resume: Progress | None) -> Iterator[dict]:
        self.sampler.set_epoch(epoch)
        if resume is not None:
            torch.set_rng_state(resume.epoch_rng)
        self.epoch_rng = torch.get_rng_state()  # the DataLoader draws its workers' seeds from it in reset()
        self.prefetcher.reset()
        self.position = 0
        if resume is not None:
            while self.position < resume.iter_in_epoch and self.prefetcher.next() is not None:
                self.position += 1
            restore_rng_state(resume.rng)
            _set_dataset_rng(self.loader.dataset, resume.dataset_rng)
        while (batch := self.prefetcher.next()) is not None:
            self.position += 1
            yield batch

    def progress(self) -> Progress:
        return Progress(self.position, self.epoch_rng, capture_rng_state(), _dataset_rng(self.loader.dataset))


def _prepare_folders(opt: dict, resumed: bool) -> None:
    from basicsr.utils import make_exp_dirs, mkdir_and_rename

    if resumed:
        return
    make_exp_dirs(opt)
    if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
        mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))


def train_pipeline(root_path: str, argv: Sequence[str] | None = None, prog: str = 'basicsr train') -> None:
    """Train from the command line ``argv`` (default ``sys.argv[1:]``); outputs under ``--root`` or
    ``root_path``. Raises :class:`~converse_plugin.errors.UserError` for anything a user can fix (among them
    :class:`~converse_plugin.engine.watchdog.PeerLostError`: another rank died or stopped answering) and
    :class:`~converse_plugin.engine.preemption.Preempted` after a preemption signal and its checkpoint."""
    with peer_failures_reported(), preserved_denormal_mode(), Preemption().installed() as preemption:
        _train(root_path, argv, prog, preemption)


def _resume_hint(opt: dict, argv: Sequence[str]) -> str:
    """Where the run can continue from and the command that continues it (for a run that stops early)."""
    import os
    import shlex

    from converse_plugin.io.checkpoint import training_states

    states = training_states(opt['path'].get('training_states') or '')
    where = f'the last complete training state is {states[0]}' if states else 'no training state was saved yet'
    args = list(argv) if '--auto_resume' in argv else [*argv, '--auto_resume']
    launcher = 'torchrun ... ' if os.environ.get('TORCHELASTIC_RUN_ID') else ('srun ' if opt.get('dist') and
                                                                             os.environ.get('SLURM_JOB_ID') else '')
    return f"{where}; resume with: {launcher}python -m converse_plugin train {shlex.join(args)}"


def _train(root_path: str, argv: Sequence[str] | None, prog: str, preemption: Preemption) -> None:
    import sys

    from basicsr.train import create_train_val_dataloader, init_tb_loggers
    from basicsr.utils import AvgTimer, MessageLogger

    argv = list(sys.argv[1:] if argv is None else argv)
    opt, args = parse_options(root_path, is_train=True, argv=argv)
    check_same_options(args.opt, argv)  # every rank: the same option file and arguments (before anything else)
    # before the option checks, whose parallel work starts PyTorch's CPU threads: they take the mode when created
    early_log: list[tuple[str, str]] = []  # (level, message) until the log file exists
    try:
        setup_flush_denormal(opt.get('train') if isinstance(opt.get('train'), dict) else None,
                             SimpleNamespace(info=lambda msg: early_log.append(('info', msg)),
                                             warning=lambda msg: early_log.append(('warning', msg))),
                             default=uses_plugin_types(opt))  # BasicSR's own files: BasicSR's arithmetic
    except OptionError as err:
        raise OptionError(f'{args.opt}: {err}') from None
    notes = validate_options(opt, args.opt, is_train=True)
    torch.backends.cudnn.benchmark = True

    resume_state = load_resume_state(opt)
    _prepare_folders(opt, resume_state is not None)
    if opt['rank'] == 0:
        copy_option_file(args.opt, opt['path']['experiments_root'], ' '.join([prog, *argv]))
    logger = start_log(opt, 'train', notes)
    watch_collectives(opt, lambda: _resume_hint(opt, argv), logger.error)
    for level, message in early_log:
        getattr(logger, level)(message)
    if opt['rank'] == 0 and (warning := shared_store_warning()):
        logger.warning(warning)
    tb_logger = init_tb_loggers(opt)
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloader(opt, logger)
    model = build_model(opt)
    setup_cpu_allocator(opt['train'].get('cpu_allocator'), 'train:cpu_allocator', model.device, logger.info)

    start_epoch, current_iter, resume, last_checkpoint = 0, 0, None, None
    if resume_state:
        model.resume_training(resume_state)
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {resume_state['iter']}.")
        start_epoch, current_iter = resume_state['epoch'], resume_state['iter']
        resume = Progress.from_state(resume_state.get('progress'), opt['rank'], opt['world_size'])
        last_checkpoint = (opt['path'].get('pretrain_network_g'), opt['path']['resume_state'])
        if resume is None:
            logger.warning('The training state has no data position or random states (not saved by converse_plugin): '
                           'the resumed run restarts its epoch from the first batch and is not exact.')
        elif opt['world_size'] > 1 and len((resume_state.get('progress') or {}).get('per_rank') or ()) != opt['world_size']:
            logger.warning(f"The training state was not saved by a run of {opt['world_size']} processes: every rank "
                           "resumes with rank 0's random states, so the resumed run is not exact.")

    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    batches = _EpochBatches(train_loader, train_sampler, make_prefetcher(opt, train_loader, logger))
    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    save_freq, print_freq = opt['logger']['save_checkpoint_freq'], opt['logger']['print_freq']
    val_opt = opt.get('val')
    epoch = start_epoch

    for epoch in range(start_epoch, total_epochs + 1):
        for train_data in batches(epoch, resume if epoch == start_epoch else None):
            data_timer.record()
            current_iter += 1  # BasicSR's count: each later epoch loads one batch and ends here, as in BasicSR
            if current_iter > total_iters:
                break
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            check_finite_batch(train_data, current_iter, last_checkpoint)
            with waiting('the training step', current_iter):
                model.feed_data(train_data)
                model.optimize_parameters(current_iter)
            check_finite_losses(model.get_current_log(), current_iter, last_checkpoint)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % print_freq == 0:
                msg_logger({'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time(),
                            **model.get_current_log()})
            validating = val_opt is not None and current_iter % val_opt['val_freq'] == 0
            if current_iter % save_freq == 0:
                if validating:  # validation draws random numbers (BasicSR's): the state saved must follow it
                    _validate(model, val_loaders, current_iter, tb_logger, val_opt, logger)
                    validating = False
                last_checkpoint = _save(model, opt, epoch, current_iter, batches.progress(), logger) or last_checkpoint
            if validating:
                _validate(model, val_loaders, current_iter, tb_logger, val_opt, logger)
            if signal_name := preemption.requested():  # every rank agrees: all stop after this iteration
                if current_iter % save_freq != 0:
                    last_checkpoint = _save(model, opt, epoch, current_iter, batches.progress(), logger) or last_checkpoint
                barrier()  # rank 0 has written the files before any rank exits (srun --kill-on-bad-exit)
                message = (f'{signal_name} at iteration {current_iter}: stopped after saving the training state; '
                           f'{_resume_hint(opt, argv)}')
                logger.info(f'Preempted: {message}')
                raise Preempted(message)
            data_timer.start()
            iter_timer.start()

    consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    with working('the checkpoint save', current_iter):
        model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if val_opt is not None:
        _validate(model, val_loaders, current_iter, tb_logger, val_opt, logger)
    if tb_logger:
        tb_logger.close()


def _save(model: Any, opt: dict, epoch: int, current_iter: int, progress: Progress, logger: Any):
    """Save the networks and the training state with ``progress``; the pair of files when both exist."""
    logger.info('Saving models and training states.')
    progress_state = _progress_state(progress)
    with working('the checkpoint save', current_iter):
        model.save(epoch, current_iter, progress=progress_state)
    state = osp.join(opt['path']['training_states'], f'{current_iter}.state')
    if osp.isfile(state):
        return osp.join(opt['path']['models'], f'net_g_{current_iter}.pth'), state
    return None


def _validate(model: Any, val_loaders: list, current_iter: int, tb_logger: Any, val_opt: dict, logger: Any) -> None:
    """Validate on every loader; in a distributed run the images are split across the ranks
    (:func:`~converse_plugin.engine.distributed_eval.validate`)."""
    if len(val_loaders) > 1:
        logger.warning('Multiple validation datasets are *only* supported by SRModel.')
    for val_loader in val_loaders:  # it draws what BasicSR's validation draws (each loader's iterator: a seed)
        with working('the validation', current_iter):
            validate(model, val_loader, current_iter, tb_logger, val_opt.get('save_img', False))
