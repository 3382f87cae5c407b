"""Every corpus file runs through ``basicsr train|test`` as it runs through BasicSR's own pipeline: the same
outcome, losses, metrics, checkpoints and images (:mod:`tests.conformance.compare`). A few files in the
fast tier, the whole corpus in the slow one."""
from __future__ import annotations

import os
from os import path as osp

import pytest

from tests.conformance.compare import compare_runs, run
from tests.conformance.corpus import CASES, VGG_FILE, Case, Data, write_vgg19


def _params():
    for case in CASES:
        marks = [] if case.fast else [pytest.mark.slow]
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.fixture(scope='session')
def vgg_file(tmp_path_factory) -> str:
    """VGG19 weights (random) for the perceptual losses, written once: nothing is downloaded."""
    return write_vgg19(str(tmp_path_factory.mktemp('vgg') / 'vgg19.pth'))


@pytest.mark.parametrize('case', list(_params()))
def test_runs_as_basicsr_runs_it(case: Case, corpus_data: Data, tmp_path, request) -> None:
    option_file = case.build(corpus_data, str(tmp_path))
    if case.needs_vgg:  # where BasicSR's VGGFeatureExtractor looks, relative to the working directory of each run
        vgg = request.getfixturevalue('vgg_file')
        for which in ('basicsr', 'plugin'):
            target = osp.join(tmp_path, which, VGG_FILE)
            os.makedirs(osp.dirname(target))
            os.symlink(vgg, target)
    ref = run('basicsr', case.phase, option_file, osp.join(tmp_path, 'basicsr'), case.plugin_types, case.flags)
    ours = run('plugin', case.phase, option_file, osp.join(tmp_path, 'plugin'), case.plugin_types, case.flags)
    if case.expect_failure:
        assert ref.error is not None, f'the corpus expects BasicSR to fail on this file:\n{ref.output[-2000:]}'
        for text in case.expect_failure:
            assert text in ours.output, f'{text!r} not in the plugin\'s message:\n{ours.output[-2000:]}'
    else:
        assert ref.error is None, f'BasicSR failed on a corpus file ({ref.error}):\n{ref.output[-3000:]}'
        assert ref.record['steps'] or ref.record['metrics'], 'BasicSR logged nothing to compare'
    compare_runs(ref, ours)
