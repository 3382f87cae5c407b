"""BasicSR 1.4.2's train and test pipelines, with early checks, exact resume and a NaN guard.

:mod:`converse_plugin.compat` installs these in place of :func:`basicsr.train.train_pipeline` and
:func:`basicsr.test.test_pipeline`. They follow BasicSR's code step by step (same folders, same log
lines, same use of the model API, and BasicSR's helpers are called through their modules so the other
compat patches apply) and add:

- **early checks**: :func:`converse_plugin.tools.validate.validate_options` runs right after the options
  are parsed, before any folder is made or data loaded;
- **exact resume** (train): each training state also records the position in the epoch, the torch random
  state at the start of the epoch (it seeds the DataLoader's workers), the global torch/numpy/Python
  random states and the training dataset's generator. A resumed run re-creates the epoch's iterator from
  the same state, skips the batches already used, then restores the saved states, so it continues exactly
  where the interrupted run was (BasicSR 1.4.2 restarts the epoch from its first batch). Validation runs
  under :func:`~converse_plugin.utils.rng.preserved_rng`, so it never changes the training randomness;
- **NaN/Inf guard** (train): a batch whose ``lq``/``gt`` or a loss that is not finite stops training with
  :class:`~converse_plugin.utils.errors.TrainingDivergedError` naming the iteration and the last good
  checkpoint; nothing is saved after it;
- the loop stops after ``total_iter`` instead of loading one more batch per remaining epoch.
"""
from __future__ import annotations

import datetime
import logging
import math
import time
from os import path as osp
from typing import Any

import torch

from converse_plugin.tools.options import parse_options
from converse_plugin.tools.validate import validate_options
from converse_plugin.utils.errors import TrainingDivergedError
from converse_plugin.utils.rng import capture_rng_state, preserved_rng, restore_rng_state

__all__ = ['train_pipeline', 'test_pipeline', 'check_finite_batch', 'check_finite_losses']


# ------------------------------------------------------------------------------------------ NaN guard
def _last_checkpoint_text(last: tuple[str, str] | None) -> str:
    if last is None:
        return 'no checkpoint was saved before it'
    models, state = last
    return f'last good checkpoint: {models} (training state {state}); fix the cause, then resume with --auto_resume'


def check_finite_batch(batch: dict, current_iter: int, last: tuple[str, str] | None) -> None:
    """Raise TrainingDivergedError when a tensor of the batch (``lq``, ``gt``, ``kernel``) has NaN/Inf."""
    for key in ('lq', 'gt', 'kernel'):
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            paths = batch.get('gt_path') or batch.get('lq_path') or []
            where = f" (images: {', '.join(map(str, paths))})" if paths else ''
            raise TrainingDivergedError(
                f'NaN or Inf in the network input {key!r} at iteration {current_iter}{where}: training stopped '
                f'before this step; {_last_checkpoint_text(last)}')


def check_finite_losses(losses: dict[str, Any], current_iter: int, last: tuple[str, str] | None) -> None:
    """Raise TrainingDivergedError when a logged loss is NaN or Inf."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(float(v))}
    if bad:
        values = ', '.join(f'{k} = {v}' for k, v in bad.items())
        raise TrainingDivergedError(
            f'NaN or Inf in the loss at iteration {current_iter} ({values}): training stopped, nothing was saved '
            f'after it; {_last_checkpoint_text(last)}. Lower train:optim_g:lr or check the data')


# ------------------------------------------------------------------------------------------ train
def _dataset_rng(dataset: Any) -> Any:
    get = getattr(dataset, 'get_rng_state', None)
    return get() if callable(get) else None


def _set_dataset_rng(dataset: Any, state: Any) -> None:
    set_state = getattr(dataset, 'set_rng_state', None)
    if state is not None and callable(set_state):
        set_state(state)



def _start_log(opt: dict, kind: str, notes: list[str]):
    """BasicSR's log file ``<kind>_<name>_<time>.log`` with the environment, the options and the validation
    notes (what ``train`` and ``test`` both write first)."""
    from basicsr.utils import get_env_info, get_root_logger, get_time_str
    from basicsr.utils.options import dict2str

    log_file = osp.join(opt['path']['log'], f"{kind}_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    for note in notes:
        logger.warning(note)
    return logger


def train_pipeline(root_path: str) -> None:
    """``basicsr.train.train_pipeline`` of BasicSR 1.4.2 with the additions listed in the module docstring."""
    import basicsr.train as bt
    from basicsr.utils import AvgTimer, MessageLogger, make_exp_dirs, mkdir_and_rename
    from basicsr.utils.options import copy_opt_file

    opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    notes = validate_options(opt, args.opt, is_train=True)

    torch.backends.cudnn.benchmark = True

    resume_state = bt.load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))

    copy_opt_file(args.opt, opt['path']['experiments_root'])

    logger = _start_log(opt, 'train', notes)
    tb_logger = bt.init_tb_loggers(opt)

    train_loader, train_sampler, val_loaders, total_epochs, total_iters = bt.create_train_val_dataloader(opt, logger)

    model = bt.build_model(opt)
    progress = None
    last_checkpoint = None
    if resume_state:
        model.resume_training(resume_state)
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {resume_state['iter']}.")
        start_epoch = resume_state['epoch']
        current_iter = resume_state['iter']
        progress = resume_state.get('progress')
        last_checkpoint = (opt['path'].get('pretrain_network_g'), opt['path']['resume_state'])
        if progress is None:
            logger.warning('The training state has no data position or random states (not saved by converse_plugin): '
                           'the resumed run restarts its epoch from the first batch and is not exact.')
    else:
        start_epoch = 0
        current_iter = 0

    msg_logger = MessageLogger(opt, current_iter, tb_logger)

    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode is None or prefetch_mode == 'cpu':
        prefetcher = bt.CPUPrefetcher(train_loader)
    elif prefetch_mode == 'cuda':
        prefetcher = bt.CUDAPrefetcher(train_loader, opt)
        logger.info(f'Use {prefetch_mode} prefetch dataloader')
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('Please set pin_memory=True for CUDAPrefetcher.')
    else:
        raise ValueError(f"Wrong prefetch_mode {prefetch_mode}. Supported ones are: None, 'cuda', 'cpu'.")

    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    save_freq = opt['logger']['save_checkpoint_freq']

    for epoch in range(start_epoch, total_epochs + 1):
        if current_iter >= total_iters:
            break
        train_sampler.set_epoch(epoch)
        resuming = progress is not None and epoch == start_epoch
        if resuming:
            torch.set_rng_state(progress['epoch_rng'])
        epoch_rng = torch.get_rng_state()  # the DataLoader draws its workers' seeds from it in reset()
        prefetcher.reset()
        iter_in_epoch = 0
        if resuming:  # skip the batches the interrupted run used, then continue from its random states
            while iter_in_epoch < progress['iter_in_epoch'] and prefetcher.next() is not None:
                iter_in_epoch += 1
            restore_rng_state(progress['rng'])
            _set_dataset_rng(train_loader.dataset, progress.get('dataset_rng'))
        train_data = prefetcher.next()

        while train_data is not None:
            data_timer.record()
            if current_iter >= total_iters:
                break
            current_iter += 1
            iter_in_epoch += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            check_finite_batch(train_data, current_iter, last_checkpoint)
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            check_finite_losses(model.get_current_log(), current_iter, last_checkpoint)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter}
                log_vars.update({'lrs': model.get_current_learning_rate()})
                log_vars.update({'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()})
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)

            if current_iter % save_freq == 0:
                logger.info('Saving models and training states.')
                # read by the patched BaseModel.save_training_state (converse_plugin.compat)
                model.training_progress = {'iter_in_epoch': iter_in_epoch, 'epoch_rng': epoch_rng,
                                           'rng': capture_rng_state(),
                                           'dataset_rng': _dataset_rng(train_loader.dataset)}
                model.save(epoch, current_iter)
                state = osp.join(opt['path']['training_states'], f'{current_iter}.state')
                if osp.isfile(state):
                    last_checkpoint = (osp.join(opt['path']['models'], f'net_g_{current_iter}.pth'), state)

            if opt.get('val') is not None and (current_iter % opt['val']['val_freq'] == 0):
                if len(val_loaders) > 1:
                    logger.warning('Multiple validation datasets are *only* supported by SRModel.')
                with preserved_rng():  # validation must not change what training draws next
                    for val_loader in val_loaders:
                        model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])

            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()

    consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    model.training_progress = None
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if opt.get('val') is not None:
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
    if tb_logger:
        tb_logger.close()


# ------------------------------------------------------------------------------------------ test
def test_pipeline(root_path: str) -> None:
    """``basicsr.test.test_pipeline`` of BasicSR 1.4.2, with the options checked before anything runs."""
    import basicsr.test as btest
    from basicsr.utils import make_exp_dirs

    opt, args = parse_options(root_path, is_train=False)
    notes = validate_options(opt, args.opt, is_train=False)

    torch.backends.cudnn.benchmark = True

    make_exp_dirs(opt)
    logger = _start_log(opt, 'test', notes)

    test_loaders = []
    for _, dataset_opt in sorted(opt['datasets'].items()):
        test_set = btest.build_dataset(dataset_opt)
        test_loader = btest.build_dataloader(
            test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=None, seed=opt['manual_seed'])
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
        test_loaders.append(test_loader)

    model = btest.build_model(opt)

    for test_loader in test_loaders:
        test_set_name = test_loader.dataset.opt['name']
        logger.info(f'Testing {test_set_name}...')
        model.validation(test_loader, current_iter=opt['name'], tb_logger=None,
                         save_img=opt['val'].get('save_img', False))
