"""basicsr compare on two tiny models: table, CSV, chart, crops; numbers equal basicsr test's."""
from __future__ import annotations

import csv
import logging
import platform
import re

import cv2
import numpy as np
import pytest
import torch
import torchvision

from converse_plugin.archs import ConverseDnCNN, DnCNN
from converse_plugin.cli import compare as compare_cli
from converse_plugin.cli import test as test_cli
from converse_plugin.engine.options import OptionError

NETS = {
    'tiny_converse': ('ConverseDnCNN', {'num_feat': 8, 'num_block': 1, 'kernel_size': 3, 'padding': 2}),
    'tiny_dncnn': ('DnCNN', {'num_feat': 8, 'num_conv': 3}),
}


def _option(name: str, arch: str, args: dict, ckpt: str, images: str) -> str:
    net = '\n'.join(f'  {k}: {v}' for k, v in args.items())
    return f"""name: {name}
model_type: SRModel
scale: 1
num_gpu: 0
manual_seed: 0
datasets:
  test_1:
    name: Tiny
    type: GaussianNoiseDataset
    dataroot_gt: {images}
    color: gray
    sigma: 25
    noise_seed: 0
    io_backend:
      type: disk
network_g:
  type: {arch}
  num_in_ch: 1
  num_out_ch: 1
{net}
path:
  pretrain_network_g: {ckpt}
  param_key_g: ~
  strict_load_g: true
val:
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 0
      test_y_channel: false
    ssim:
      type: calculate_ssim
      crop_border: 0
      test_y_channel: false
"""


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('compare')
    (root / 'imgs').mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = cv2.GaussianBlur((rng.random((40, 48)) * 255).astype(np.uint8), (5, 5), 2)
        cv2.imwrite(str(root / 'imgs' / f'im{i}.png'), img)
    torch.manual_seed(0)
    files = []
    for name, (arch, args) in NETS.items():
        net = {'ConverseDnCNN': ConverseDnCNN, 'DnCNN': DnCNN}[arch](1, 1, **args)
        torch.save(net.state_dict(), root / f'{name}.pth')
        path = root / f'{name}.yml'
        path.write_text(_option(name, arch, args, str(root / f'{name}.pth'), str(root / 'imgs')))
        files.append(str(path))
    backbone = root / 'alexnet_random.pth'  # LPIPS plumbing without downloads (values not calibrated)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    return root, files, str(backbone)


def test_compare_writes_table_csv_chart_crops(setup, monkeypatch, capsys):
    root, files, backbone = setup
    monkeypatch.setenv('CONVERSE_LPIPS_BACKBONE_ALEX', backbone)
    monkeypatch.chdir(root)
    out = root / 'out'
    assert compare_cli.main(['--models', *files, '--out', str(out), '--input-size', '1xCx32x32', '--crop-size', '16',
                             '--repeat', '1', '--crops', 'im1', 'not_there', '--cpu']) == 0
    with open(out / 'comparison.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['model'], r['dataset'], r['images']) for r in rows] == [
        ('tiny_converse', 'Tiny', '2'), ('tiny_dncnn', 'Tiny', '2')]
    for row in rows:
        assert 0 <= float(row['lpips']) < 2 and 0 < float(row['ssim']) <= 1
        assert row['input_size'] == '1x1x32x32' and float(row['latency_ms']) > 0
    dncnn = rows[1]
    assert int(dncnn['params']) == 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 9 + 1
    assert int(dncnn['macs']) == 32 * 32 * (8 * 9 + 8 * 8 * 9 + 8 * 9) and dncnn['fft_macs'] == '0'
    assert int(rows[0]['fft_macs']) > 0  # Converse2D's transforms are counted
    md = (out / 'comparison.md').read_text()
    assert re.search(r'\| tiny_dncnn \| Tiny \| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|', md)
    assert '![quality vs cost](quality_vs_cost.png)' in md and 'crops/Tiny_im1.png' in md
    allocator = 'cache' if platform.libc_ver()[0] == 'glibc' else 'system'  # --cpu-allocator's default
    assert f'threads, allocator {allocator})' in md
    assert (out / 'quality_vs_cost.png').stat().st_size > 1000
    assert 'Open report.html in a browser' in md
    for image in ('im0', 'im1'):  # report.html's images: ground truth, input, each model
        for side in ('gt', 'input', 'm0', 'm1'):
            assert cv2.imread(str(out / 'images' / 'Tiny' / f'{image}.{side}.png'), cv2.IMREAD_UNCHANGED).shape == (40, 48)
    montage = cv2.imread(str(out / 'crops' / 'Tiny_im1.png'))
    # input, two models, ground truth: 4 tiles of 16 px zoomed twice, 4 px gaps, a 20 px label bar
    assert montage.shape == (20 + 32, 4 * 32 + 3 * 4, 3)
    printed = capsys.readouterr()
    assert 'tiny_converse' in printed.out
    assert '--crops not_there: no image of that name in the test sets' in printed.err
    assert 'tiny_dncnn on Tiny: 2 images in' in printed.err  # progress, one line per model and test set

    # the same numbers as `basicsr test` (its log prints 4 decimals; BasicSR's logger writes its file only
    # when first set up in a process, so listen to the logger itself: a filter, which start_log's reset of a
    # logger without a file leaves in place, unlike a handler)
    records: list[str] = []

    def listen(record):
        records.append(record.getMessage())
        return True

    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.addFilter(listen)
    logger.setLevel(logging.INFO)
    try:
        for option in files:
            assert test_cli.main(['-opt', option, '--root', str(root / 'test_runs')]) == 0
    finally:
        logger.removeFilter(listen)
        logger.setLevel(level)
    logs = '\n'.join(records).split('Validation Tiny')[1:]
    assert len(logs) == 2
    for row, log in zip(rows, logs):
        for key in ('psnr', 'ssim'):
            logged = float(re.findall(rf'# {key}: ([\d.]+)', log)[-1])
            assert logged == pytest.approx(float(row[key]), abs=5e-5), (row['model'], key)


def test_basicsr_test_report_option(setup, tmp_path):
    """val: report: true writes report.html beside the saved images; without save_img it stops before the run."""
    root, files, _ = setup
    from converse_plugin.engine.html_report import read_data

    text = open(files[1]).read()
    report = tmp_path / 'report.yml'
    report.write_text(text.replace('  save_img: false\n', '  save_img: true\n  suffix: ~\n  report: true\n'))
    assert test_cli.main(['-opt', str(report), '--root', str(tmp_path / 'a')]) == 0
    results = tmp_path / 'a' / 'results' / 'tiny_dncnn'
    data = read_data(results / 'report.html')
    (images,) = [s['images'] for s in data['sets']]
    assert [im['n'] for im in images] == ['im0', 'im1'] and data['pair'] == ['input', 'm0']
    assert (results / 'visualization' / 'Tiny' / 'im1_tiny_dncnn.png').is_file()
    assert (results / 'images' / 'Tiny' / 'im1.gt.png').is_file()
    summary = data['summary']
    assert summary['rows'][0][:3] == ['tiny_dncnn', 'Tiny', 2]
    psnr = [c[0] for c in summary['cols']].index('psnr')
    assert summary['rows'][0][psnr] == pytest.approx(sum(im['v']['m0'][0] for im in images) / 2, abs=1e-4)

    no_images = tmp_path / 'no_images.yml'
    no_images.write_text(text.replace('  save_img: false\n', '  save_img: false\n  report: true\n'))
    assert test_cli.main(['-opt', str(no_images), '--root', str(tmp_path / 'b')]) == 2
    assert not (tmp_path / 'b' / 'results').exists()  # refused before anything ran


def test_compare_errors(setup, tmp_path):
    root, files, _ = setup
    with pytest.raises(OptionError, match="'nope' is neither an option file nor a zoo name"):
        compare_cli.run_compare(['nope'], str(tmp_path))
    with pytest.raises(OptionError, match='--datasets .*missing_dir: no such folder or option file'):
        compare_cli.run_compare([files[0]], str(tmp_path), datasets=[str(tmp_path / 'missing_dir')],
                                use_lpips=False)


class _EchoModel:
    """Stands in for a BasicSR model: the output is the input."""

    def feed_data(self, data):
        self.lq, self.gt = data['lq'], data['gt']

    def test(self):
        self.output = self.lq

    def get_current_visuals(self):
        return {'lq': self.lq, 'result': self.output, 'gt': self.gt}


def test_crop_names_match_the_ground_truth_name_too():
    # BlurKernelDataset names its inputs <stem>_k<kernel>: a crop name may be the image's own name
    batches = [{'lq': torch.full((1, 1, 8, 8), v), 'gt': torch.full((1, 1, 8, 8), v), 'lq_path': [f'/d/{n}.png'],
                'gt_path': [f'/d/{g}.png']}
               for v, n, g in ((0.2, '101085_k1', '101085'), (0.4, '101087_k1', '101087'))]
    metrics = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}
    matched: set[str] = set()
    values, n, kept = compare_cli.evaluate(_EchoModel(), batches, metrics, None, {'101087', 'x'}, matched)
    assert n == 2 and list(kept) == ['101087_k1'] and matched == {'101087'}
    assert kept['101087_k1']['gt'].max() == round(0.4 * 255)
    assert values['psnr'] == float('inf')
