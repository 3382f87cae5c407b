"""The log file every run opens first (BasicSR's layout: environment, options, then the run's lines)."""
from __future__ import annotations

import logging
from os import path as osp

__all__ = ['start_log']


def start_log(opt: dict, kind: str, notes: list[str]):
    """BasicSR's root logger writing ``<log folder>/<kind>_<name>_<time>.log``, with the environment, the
    options and the notes of the option checks (e.g. gray images converted) written first."""
    from basicsr.utils import get_env_info, get_root_logger, get_time_str
    from basicsr.utils.options import dict2str

    _forget_logger_without_file()
    log_file = osp.join(opt['path']['log'], f"{kind}_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    for note in notes:
        logger.warning(note)
    return logger


def _forget_logger_without_file() -> None:
    """Undo an initialisation of BasicSR's 'basicsr' logger that happened before the log file existed.

    The option checks build the option file's networks, datasets and models before the log starts. A
    constructor that calls ``get_root_logger()`` (other projects' datasets, models and networks do, as BasicSR's
    own ``REDSDataset`` does) then initialises the logger without a file and at WARNING level, and BasicSR's
    ``get_root_logger`` returns that logger from then on: no log file, no INFO line. BasicSR's own pipeline
    opens its log before it builds anything; this gives the same result."""
    from basicsr.utils import logger as basicsr_logger

    log = logging.getLogger('basicsr')
    if 'basicsr' not in basicsr_logger.initialized_logger or \
            any(isinstance(h, logging.FileHandler) for h in log.handlers):
        return
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    del basicsr_logger.initialized_logger['basicsr']
