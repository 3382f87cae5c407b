"""The plugin's test loop (``basicsr test``): BasicSR 1.4.2's ``test_pipeline`` on its public API, with the
options checked before anything runs and the model built with the plugin's checkpoint policy. Under
``--launcher pytorch|slurm`` the test images are split across the ranks, with the single-process metrics
(:mod:`converse_plugin.engine.distributed_eval`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from converse_plugin.engine.allocator import setup_cpu_allocator
from converse_plugin.engine.build import build_model
from converse_plugin.engine.dist import check_same_options, watch_collectives
from converse_plugin.engine.distributed_eval import validate
from converse_plugin.engine.html_report import run_report_hook
from converse_plugin.engine.logs import start_log
from converse_plugin.engine.options import parse_options
from converse_plugin.engine.validate import validate_options
from converse_plugin.engine.watchdog import peer_failures_reported, working

__all__ = ['test_pipeline']


def test_pipeline(root_path: str, argv: Sequence[str] | None = None) -> None:
    """Evaluate every ``datasets`` entry of the option file given on the command line ``argv`` (default
    ``sys.argv[1:]``); logs and images under ``<--root or root_path>/results/<name>/``. On the CPU, glibc keeps
    freed memory for the next image (``val: cpu_allocator``, :mod:`converse_plugin.engine.allocator`).
    Raises :class:`~converse_plugin.errors.UserError` for anything a user can fix."""
    with peer_failures_reported():  # another rank gone: one line, not a traceback
        _test(root_path, argv)


def _test(root_path: str, argv: Sequence[str] | None) -> None:
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.utils import make_exp_dirs

    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    opt, args = parse_options(root_path, is_train=False, argv=argv)
    check_same_options(args.opt, argv)  # every rank: the same option file and arguments
    notes = validate_options(opt, args.opt, is_train=False)
    report = run_report_hook(opt, args.opt)  # val:report: true -> report.html after the test sets (checked now)
    torch.backends.cudnn.benchmark = True

    make_exp_dirs(opt)
    logger = start_log(opt, 'test', notes)
    watch_collectives(opt, log=logger.error,
                      resume_hint=lambda: 'run the same command again')

    test_loaders = []
    for _, dataset_opt in sorted(opt['datasets'].items()):
        test_set = build_dataset(dataset_opt)
        test_loader = build_dataloader(
            test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=None, seed=opt['manual_seed'])
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
        test_loaders.append(test_loader)

    model = build_model(opt)
    setup_cpu_allocator(opt['val'].get('cpu_allocator'), 'val:cpu_allocator', model.device, logger.info)
    for test_loader in test_loaders:
        logger.info(f"Testing {test_loader.dataset.opt['name']}...")
        # distributed (torchrun ... test --launcher pytorch): the images are split across the ranks
        with working('the test of ' + str(test_loader.dataset.opt['name'])):
            validate(model, test_loader, current_iter=opt['name'], tb_logger=None,
                     save_img=opt['val'].get('save_img', False))
    if report:
        report(test_loaders, logger.info)
