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

    log_file = osp.join(opt['path']['log'], f"{kind}_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    for note in notes:
        logger.warning(note)
    return logger
