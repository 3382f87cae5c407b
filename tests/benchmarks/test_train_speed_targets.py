"""benchmarks/train_speed_targets.py: the training-speed targets read from the benchmarks' JSON reports (met,
missed, not measured; merged reports; clear errors for a bad file)."""
import json

import pytest

from benchmarks import train_speed_targets as t


def step(ms: float, ops: int = 1000, peak: int | None = None, batch: int = 4, size: int = 64) -> dict:
    return {'ms_per_step': ms, 'leaf_aten_ops': ops, 'peak_bytes': peak, 'batch': batch, 'size': size}


def cuda_step_report(**results) -> dict:
    return {'device': 'cuda', 'machine': 'NVIDIA H200', 'results': results}


def by_target(rows: list[dict]) -> dict:
    return {r['target']: r for r in rows}


def test_cuda_step_targets_take_the_fastest_mode_and_the_checkpoint_peak():
    rows = by_target(t.step_targets(cuda_step_report(**{
        'dncnn|eager': step(70.0), 'dncnn|compile': step(55.0),
        'dncnn|checkpoint': step(80.0, peak=7 * t.GIB),
        'usrnet|eager': step(130.0),
        'msrresnet|compile': step(39.9)})))
    dncnn = rows['ConverseDnCNN training step']
    assert dncnn['met'] is True and dncnn['measured'] == '55.0 ms (compile)'
    assert rows['ConverseUSRNet training step']['met'] is False
    assert rows['ConverseMSRResNet training step']['met'] is True
    assert rows['ConverseDnCNN step with checkpoint_blocks, peak memory']['measured'].startswith('7.00 GiB')
    assert rows['ConverseDnCNN step with checkpoint_blocks, peak memory']['met'] is True


def test_targets_without_numbers_are_not_measured_rather_than_met():
    rows = t.step_targets(cuda_step_report())
    assert [r['met'] for r in rows] == [None] * 4
    assert all(r['measured'] == 'not measured' for r in rows)
    cpu = t.step_targets({'device': 'cpu', 'results': {'dncnn|eager': step(300.0, 13000)}})
    assert [r['met'] for r in cpu] == [None, None]


def test_cpu_targets_compare_with_the_baseline_op_count_and_the_eager_step():
    cpu = by_target(t.step_targets({'device': 'cpu', 'results': {
        'dncnn|eager': step(300.0, 13000), 'dncnn|compile': step(180.0, 4378)}}))
    ops = cpu['compiled ConverseDnCNN step, leaf aten ops']
    assert ops['met'] is False and ops['measured'] == '4,378'  # a third of 13,131 is 4,377
    speed = cpu['compiled ConverseDnCNN step against eager']
    assert speed['met'] is True and speed['measured'] == '1.67x'
    toy = t.step_targets({'device': 'cpu', 'results': {'dncnn|compile': step(10.0, 2000, batch=1, size=16)}})
    assert toy[0]['met'] is None and toy[0]['measured'] == '2,000 at B1 16x16 (the count is for B4 64x64)'


def op_case(prod_fb: float, rfft: float, irfft: float, oracle_fb: float = 1.0) -> dict:
    return {'times_s': {'production|forward+backward': prod_fb, 'oracle|forward+backward': oracle_fb,
                        'rfft2|floor': rfft, 'irfft2|floor': irfft}}


def test_operator_targets():
    rows = by_target(t.operator_targets({'cases': {
        'train': op_case(2.4e-3, 0.25e-3, 0.25e-3),      # 2.4 ms against 2 x 0.5 ms: 2.4x
        's2': op_case(4e-3, 1e-4, 1e-4, oracle_fb=3.4e-3)}}))
    fft = rows['Converse2D forward+backward, B16 C64 128² k7, against two rfft2+irfft2 pairs']
    assert fft['met'] is True and fft['measured'].startswith('2.40x')
    s2 = rows['Converse2D s=2 forward+backward against the direct formulation']
    assert s2['met'] is False and s2['measured'] == '4.00 ms against 3.40 ms'
    missing = t.operator_targets({'cases': {}})
    assert [r['met'] for r in missing] == [None, None]


def test_main_merges_reports_and_strict_fails_on_a_missed_target(tmp_path, capsys):
    eager = tmp_path / 'eager.json'
    compiled = tmp_path / 'compile.json'
    eager.write_text(json.dumps(cuda_step_report(**{'dncnn|eager': step(171.0)})))
    compiled.write_text(json.dumps(cuda_step_report(**{'dncnn|compile': step(58.0)})))
    assert t.main(['--train-step', str(eager), str(compiled)]) == 0
    out = capsys.readouterr().out
    assert '| ConverseDnCNN training step | 58.0 ms (compile) | <= 60 ms | yes |' in out
    assert 'met 1, missed 0, not measured 3' in out
    assert t.main(['--train-step', str(eager), '--strict']) == 1
    assert '| ConverseDnCNN training step | 171.0 ms (eager) | <= 60 ms | **no** |' in capsys.readouterr().out


def test_main_names_a_missing_or_broken_report(tmp_path, monkeypatch):
    broken = tmp_path / 'broken.json'
    broken.write_text('{"results": ')
    with pytest.raises(SystemExit, match='broken.json: not a benchmark report'):
        t.main(['--train-step', str(broken)])
    with pytest.raises(SystemExit, match='nothing.json: cannot read the benchmark report'):
        t.main(['--converse2d', str(tmp_path / 'nothing.json')])
    monkeypatch.setattr(t, 'RESULTS', str(tmp_path))  # no default reports there
    with pytest.raises(SystemExit, match='no report found'):
        t.main(['--device', 'cuda'])
