"""Run one option file through BasicSR's own pipeline or the plugin's, recording what the run computes.

Used by the conformance tests in a subprocess (one run per process, as a user runs it)::

    python runner.py basicsr|plugin train|test ROOT RECORD.json [--plugin-types] -- -opt FILE [flags...]

``basicsr`` runs ``basicsr.train.train_pipeline`` / ``basicsr.test.test_pipeline`` (the reference; with
``--plugin-types`` after ``import converse_plugin``, whose registrations such a file needs), ``plugin`` runs the
``basicsr train|test`` command (``converse_plugin.cli.main``) with ``--root ROOT``. Both record, at
full precision, every dictionary BasicSR's ``MessageLogger`` is given (the losses, learning rates and
iterations of each logged step) and every validation mean BasicSR's ``_update_best_metric_result`` is
given (one per dataset and metric), through the same wrappers around those two BasicSR methods: nothing else of either run changes.
The record is written even when the run fails, with the exception's type and first line.
"""
from __future__ import annotations

import json
import sys
import traceback


def _install_recorders(record: dict) -> None:
    from basicsr.models.base_model import BaseModel
    from basicsr.utils.logger import MessageLogger

    log_call = MessageLogger.__call__
    update_best = BaseModel._update_best_metric_result

    def recording_log(self, log_vars):
        entry = {}
        for key, value in log_vars.items():
            if key == 'lrs':
                entry[key] = [float(v) for v in value]
            elif key not in ('time', 'data_time'):
                entry[key] = float(value) if not isinstance(value, (int, str)) else value
        record['steps'].append(entry)
        return log_call(self, log_vars)

    def recording_metric(self, dataset_name, metric, val, current_iter):
        record['metrics'].append({'iter': current_iter if isinstance(current_iter, int) else str(current_iter),
                                  'dataset': dataset_name, 'metric': metric, 'value': float(val)})
        return update_best(self, dataset_name, metric, val, current_iter)

    MessageLogger.__call__ = recording_log
    BaseModel._update_best_metric_result = recording_metric


def main(argv: list[str]) -> int:
    split = argv.index('--')
    head, args = argv[:split], argv[split + 1:]
    which, phase, root, out = head[:4]
    plugin_types = '--plugin-types' in head[4:]
    record = {'steps': [], 'metrics': [], 'error': None}
    status = 0
    try:
        if which == 'plugin' or plugin_types:
            import converse_plugin  # noqa: F401 (registers the plugin's types)
        _install_recorders(record)
        if which == 'basicsr':
            sys.argv = ['basicsr', *args]
            if phase == 'train':
                from basicsr.train import train_pipeline
            else:
                from basicsr.test import test_pipeline as train_pipeline
            train_pipeline(root)
        else:  # the `basicsr` command as a user runs it (one-line errors, exit status)
            from converse_plugin.cli import main as cli
            status = cli([phase, '--root', root, *args])
            if status:
                record['error'] = {'type': 'exit', 'message': f'exit status {status}'}
    except BaseException as err:  # noqa: BLE001 (recorded and compared: the outcome is part of the result)
        record['error'] = {'type': type(err).__name__, 'message': str(err).splitlines()[0] if str(err) else ''}
        traceback.print_exc()
        status = 1
    with open(out, 'w', encoding='utf-8') as f:
        json.dump(record, f)
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
