"""Exact resume holds for the corpus's files too: a run stopped after its first checkpoint and resumed with
``--auto_resume`` logs the same losses afterwards and ends with the same checkpoints as a run that was never
stopped (which is BasicSR's run, :mod:`tests.conformance.test_conformance`)."""
from __future__ import annotations

from os import path as osp

import pytest
import torch

from tests.conformance.compare import compare_steps, run
from tests.conformance.corpus import CASES, Case, Data

RESUMED = {'train_MSRResNet_x4_folder': True, 'train_RRDBNet_x4_ema': False, 'train_MSRResNet_x2_workers': False,
           'train_SRGAN_MSRResNet_x4': False}  # name -> in the fast tier


def _params():
    for case in CASES:
        if case.name in RESUMED:
            yield pytest.param(case, id=case.name, marks=[] if RESUMED[case.name] else [pytest.mark.slow])


@pytest.mark.parametrize('case', list(_params()))
def test_stopped_and_resumed_equals_the_whole_run(case: Case, corpus_data: Data, tmp_path) -> None:
    option_file = case.build(corpus_data, str(tmp_path))
    whole = run('plugin', 'train', option_file, osp.join(tmp_path, 'whole'), case.plugin_types)
    assert whole.error is None, whole.output[-3000:]
    root = osp.join(tmp_path, 'stopped')
    first = run('plugin', 'train', option_file, root, case.plugin_types, ['--force_yml', 'train:total_iter=2'])
    assert first.error is None, first.output[-3000:]
    resumed = run('plugin', 'train', option_file, root, case.plugin_types, ['--auto_resume'])
    assert resumed.error is None, resumed.output[-3000:]
    assert 'Resuming training from epoch' in resumed.output

    whole.record['steps'] = [s for s in whole.record['steps'] if s['iter'] > 2]
    assert whole.record['steps'], 'nothing logged after the checkpoint'
    compare_steps(whole, resumed)
    models = osp.join('experiments', case.name, 'models')
    for name in ('net_g_4.pth', 'net_g_latest.pth'):
        expected = torch.load(osp.join(whole.root, models, name), weights_only=True)
        got = torch.load(osp.join(root, models, name), weights_only=True)
        assert expected.keys() == got.keys()
        for key in expected:
            for param, value in expected[key].items():
                assert torch.equal(value, got[key][param]), f'{name}:{key}:{param} differs from the whole run'
