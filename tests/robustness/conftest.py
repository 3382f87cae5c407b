"""In-process CLI runs: BasicSR's root logger is created once per process and keeps the stderr stream
it was created with (pytest's capture of an earlier test); each test starts with a fresh one."""
from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def fresh_basicsr_logger():
    from basicsr.utils import logger as basicsr_logger

    def reset() -> None:
        log = logging.getLogger('basicsr')
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        basicsr_logger.initialized_logger.pop('basicsr', None)

    reset()
    yield
    reset()
