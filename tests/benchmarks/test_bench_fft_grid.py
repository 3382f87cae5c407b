"""The FFT grid-size benchmark (benchmarks/bench_fft_grid.py): factorisations and its table/JSON."""
import json

import pytest

from benchmarks import bench_fft_grid as bfg


@pytest.mark.parametrize('n, factors', [(1, []), (2, [2]), (76, [2, 2, 19]), (80, [2, 2, 2, 2, 5]),
                                        (97, [97]), (84, [2, 2, 3, 7]), (361, [19, 19])])
def test_prime_factors(n, factors):
    assert bfg.prime_factors(n) == factors


def test_factor_text():
    assert bfg.factor_text(76) == '76 = 2^2 * 19'
    assert bfg.factor_text(84) == '84 = 2^2 * 3 * 7'
    with pytest.raises(ValueError, match='n must be >= 1'):
        bfg.prime_factors(0)


def test_main_writes_one_row_per_crop(tmp_path, capsys):
    out = tmp_path / 'grid.json'
    assert bfg.main(['--crops', '6', '9', '--padding', '2', '--batch', '1', '--channels', '2', '--repeat', '2',
                     '--json', str(out)]) == 0
    rows = json.loads(out.read_text())['rows']
    assert [(r['crop'], r['grid'], r['largest_prime']) for r in rows] == [(6, 10, 5), (9, 13, 13)]
    for r in rows:
        assert min(r[f'{name}_ms'] for name in bfg.TRANSFORMS) > 0
        pixels = 2 * r['crop'] ** 2
        assert r['ns_per_crop_pixel'] == pytest.approx((r['rfft2_ms'] + r['irfft2_ms']) * 1e6 / pixels)
        assert r['pairs_ns_per_crop_pixel'] == pytest.approx((r['fft2_pairs_ms'] + r['ifft2_pairs_ms']) * 1e6 / pixels)
    table = capsys.readouterr().out
    assert '| 9 | 13 = 13 |' in table and table.count('|---:|---|') == 1 and 'pairs fft2 ms' in table


def test_time_pair_times_every_transform_for_an_odd_batch(monkeypatch):
    """An odd batch's pairs are ceil(B / 2) complex images, as in the operator's paired form."""
    shapes = []
    real_fft2 = bfg.torch.fft.fft2
    monkeypatch.setattr(bfg.torch.fft, 'fft2', lambda t: shapes.append((tuple(t.shape), t.dtype)) or real_fft2(t))
    runs = bfg.time_pair(3, 1, 4, 'cpu', 2)
    assert shapes == [((2, 1, 4, 4), bfg.torch.complex64)] * 2
    assert len(runs) == 2 and all(len(r) == len(bfg.TRANSFORMS) for r in runs)


def test_main_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        bfg.main(['--crops', '0'])
    assert 'crops, batch, channels and repeat must be >= 1' in capsys.readouterr().err
