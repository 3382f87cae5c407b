"""The training-step benchmark's time breakdown (benchmarks/bench_train_step.py --breakdown)."""
import pytest
import torch

from benchmarks import bench_train_step as bts


@pytest.mark.parametrize('name, expected', [
    ('aten::mm', 'GEMM/conv'),
    ('aten::bmm', 'GEMM/conv'),
    ('aten::mkldnn_convolution', 'GEMM/conv'),
    ('aten::convolution_backward', 'GEMM/conv'),
    ('aten::_slow_conv2d_backward', 'GEMM/conv'),
    ('aten::_fft_r2c', 'FFT'),
    ('aten::_fft_c2r', 'FFT'),
    ('aten::copy_', 'copies'),
    ('## Call CompiledFxGraph fabc123 ##', 'fused kernels'),
    ('graph_0_cpp_fused_add_gelu_0', 'fused kernels'),
    ('aten::gelu', 'other'),
    ('converse::apply_filter', 'other'),
    ('aten::mul', 'other'),
])
def test_category(name, expected):
    assert bts.category(name) == expected


def test_breakdown_splits_a_step_by_category():
    a, b = torch.rand(256, 256), torch.rand(256, 256)
    x = torch.rand(8, 64, 64)

    def step():
        for _ in range(4):
            a @ b
        torch.fft.irfft2(torch.fft.rfft2(x), s=(64, 64))
        b.t().contiguous()
        torch.nn.functional.gelu(a)

    parts = bts.breakdown(step)
    assert set(parts) == set(bts.BREAKDOWN)
    for key in ('GEMM/conv', 'FFT', 'copies', 'other'):
        assert parts[key] > 0, (key, parts)
    assert parts['fused kernels'] == 0


@pytest.mark.slow
def test_adam_choice_reaches_the_step():
    """--adam default is torch.optim.Adam as BasicSR builds it (a loop of aten ops per parameter), fused one
    kernel for all; neither is compiled in the compile mode, auto is (no aten ops of the update left)."""
    def ops(mode, adam):
        _, step = bts.build('dncnn_baseline', mode, 'cpu', 1, 8, adam)
        step()
        return bts.leaf_ops(step, 'cpu')[0]

    default, fused = ops('eager', 'default'), ops('eager', 'fused')
    assert ops('eager', 'auto') == fused
    assert default > fused + 5 * 17  # DnCNN: 17 convolutions, 34 tensors, several ops each
    assert ops('compile', 'default') - ops('compile', 'auto') > default - fused - 20


@pytest.mark.slow
def test_source_times_another_checkout(tmp_path):
    """--source imports converse_plugin from the given checkout and names its commit; a directory without the
    package is a clear message, not a traceback."""
    import json
    import subprocess
    import sys
    from os import path as osp
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    script = osp.join(repo, 'benchmarks', 'bench_train_step.py')

    def run(source, *extra):
        return subprocess.run([sys.executable, script, '--source', str(source), *extra], capture_output=True,
                              text=True, cwd=tmp_path)

    bad = run(tmp_path)
    assert bad.returncode != 0 and 'no converse_plugin/__init__.py there' in bad.stderr
    assert 'Traceback' not in bad.stderr
    fake = tmp_path / 'fake'
    (fake / 'converse_plugin').mkdir(parents=True)
    (fake / 'converse_plugin' / '__init__.py').write_text('raise SystemExit("the fake checkout was imported")\n')
    assert 'the fake checkout was imported' in run(fake, '--recipes', 'dncnn_baseline', '--modes', 'eager').stderr
    link = tmp_path / 'checkout'  # this checkout under another path: a real run
    link.symlink_to(repo)
    out = run(link, '--recipes', 'dncnn_baseline', '--modes', 'eager', '--steps', '1', '--warmup', '0', '--batch',
              '1', '--size', '8', '--json', str(tmp_path / 'r.json'))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'code of {link} (' in out.stdout
    report = json.loads((tmp_path / 'r.json').read_text())
    assert report['source'] == str(link) and report['source_commit'] not in (None, 'unknown')
    assert report['results']['dncnn_baseline|eager']['peak_bytes'] is None


def test_os_usage_counts_the_faults_of_fresh_memory():
    """A fresh 128 MiB tensor is mapped afresh by any allocator setting (above glibc's largest mmap threshold,
    32 MiB): one minor fault per 4 KiB page that is written."""
    before = bts.os_usage()
    if before is None:
        pytest.skip('no resource module on this platform')
    big = torch.ones(32 * 2**20)  # 128 MiB of float32
    after = bts.os_usage()
    assert after[0] - before[0] > 128 * 2**20 // 4096 // 2, (before, after)
    assert after[1] >= before[1]
    del big


def test_compile_mode_uses_what_train_compile_adds():
    from converse_plugin.models.training_speed import parse_compile
    assert bts.train_compile_kwargs('cpu') == parse_compile(True, torch.device('cpu'))
    assert bts.train_compile_kwargs('cpu')['options']['aggressive_fusion'] is True


def test_compile_kwargs_of_an_older_checkout_follow_its_parse_compile(monkeypatch):
    """A checkout whose parse_compile takes no device gets parse_compile(True); a TypeError raised inside the
    current one is not mistaken for an older signature."""
    from converse_plugin.models import training_speed

    def old(value):
        return {'mode': 'default'} if value is True else None

    monkeypatch.setattr(training_speed, 'parse_compile', old)
    assert bts.train_compile_kwargs('cpu') == {'mode': 'default'}

    def broken(value, device=None):
        raise TypeError('a bug inside parse_compile')

    monkeypatch.setattr(training_speed, 'parse_compile', broken)
    with pytest.raises(TypeError, match='a bug inside'):
        bts.train_compile_kwargs('cpu')


@pytest.mark.parametrize('flag, flushed', [('on', True), ('off', False)])
def test_flush_denormal_flag_sets_up_the_cpu_as_train_does(tmp_path, flag, flushed):
    """--flush-denormal on|off: the header and the JSON say which mode the timed steps ran in, and the mode
    was really in effect in the process (probed in its threads after the run)."""
    import json
    import subprocess
    import sys
    code = ('import sys; sys.argv[0] = "bench_train_step.py"; from benchmarks import bench_train_step as b; '
            'b.main(sys.argv[1:]); from converse_plugin.engine.denormals import flushing_threads; '
            'print("probe", *flushing_threads())')
    out = subprocess.run([sys.executable, '-c', code, '--recipes', 'dncnn_baseline', '--modes', 'eager', '--steps',
                          '1', '--warmup', '0', '--batch', '1', '--size', '8', '--no-memory', '--threads', '2',
                          '--flush-denormal', flag, '--json', str(tmp_path / 'r.json')],
                         capture_output=True, text=True, cwd=bts.REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'denormals {"flushed" if flushed else "computed"}' in out.stdout
    assert json.loads((tmp_path / 'r.json').read_text())['flush_denormal'] is flushed
    assert out.stdout.strip().splitlines()[-1] == ('probe 2 2' if flushed else 'probe 0 2')
