"""report.html of basicsr compare in a real browser (headless Chromium driven by Playwright), and the page
without a browser: size for a large test set, no network address, the JSON it carries.

The browser tests open a report generated from two zoo denoisers (converse_dncnn, kair_dncnn_sigma25) on two
crops of Set12 (../shared; skipped without it), and a synthetic 100-image report (no ../shared needed). They
skip with a reason without Debian's ``chromium`` or the ``playwright`` package. With
``CONVERSE_REPORT_SCREENSHOTS=DIR`` the zoo test also saves the page's screenshots there (the README's image:
``CONVERSE_REPORT_SCREENSHOTS=docs/images pytest tests/tools/test_compare_report.py -k screenshot``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from converse_plugin.engine import html_report
from converse_plugin.engine.html_report import Column, ReportImage, ReportSet, write_report
from tests.conftest import require_shared

CHROMIUM = os.environ.get('CONVERSE_CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--force-color-profile=srgb']
MODELS = ('converse_dncnn', 'kair_dncnn_sigma25')
CROPS = {'05': (40, 40), '09': (296, 300)}  # Set12 monarch and barbara: 128 x 192 crops at (top, left)


def report_data(page: str) -> dict:
    """The JSON a report page carries."""
    return html_report.read_data(page)


# ------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def zoo_report(tmp_path_factory):
    """report.html of basicsr compare for the two zoo denoisers on two 128 x 192 Set12 crops (~10-25 s)."""
    zoo = require_shared('zoo', 'kair_dncnn_sigma25.pth').parent
    set12 = require_shared('data', 'Set12')
    from converse_plugin.cli import compare as compare_cli
    from converse_plugin.metrics.lpips_backbone import cache_file

    root = tmp_path_factory.mktemp('zoo_report')
    (root / 'Set12_crops').mkdir()
    for name, (top, left) in CROPS.items():
        img = cv2.imread(str(set12 / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / 'Set12_crops' / f'{name}.png'), img[top:top + 128, left:left + 192])
    saved = os.environ.get('CONVERSE_LPIPS_BACKBONE_ALEX')
    if not cache_file('alex').is_file():  # LPIPS plumbing without downloads (values not calibrated)
        import torch
        import torchvision
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), root / 'alexnet_random.pth')
        os.environ['CONVERSE_LPIPS_BACKBONE_ALEX'] = str(root / 'alexnet_random.pth')
    try:
        start = time.perf_counter()
        compare_cli.run_compare(list(MODELS), str(root / 'out'), [str(root / 'Set12_crops')], str(zoo),
                                input_size='1xCx32x32', repeat=1, cpu=True)
        print(f'compare: {time.perf_counter() - start:.1f} s')
    finally:
        if saved is None:
            os.environ.pop('CONVERSE_LPIPS_BACKBONE_ALEX', None)
        else:
            os.environ['CONVERSE_LPIPS_BACKBONE_ALEX'] = saved
    return root / 'out'


@pytest.fixture(scope='module')
def run_report(tmp_path_factory, zoo_report):
    """report.html of basicsr test (val: report: true) for kair_dncnn_sigma25 on the same two crops."""
    from converse_plugin.cli import test as test_cli

    import yaml

    root = tmp_path_factory.mktemp('run_report')
    shipped = Path(__file__).resolve().parents[2] / 'options' / 'test' / 'test_DnCNN_Set12_sigma25.yml'
    opt = yaml.safe_load(shipped.read_text())
    opt['datasets']['test_1']['dataroot_gt'] = str(zoo_report.parent / 'Set12_crops')
    opt['path']['pretrain_network_g'] = str(require_shared('zoo', 'kair_dncnn_sigma25.pth'))
    opt['num_gpu'] = 0
    opt['val'].update(report=True, pbar=False)
    option = root / 'test_DnCNN_report.yml'
    option.write_text(yaml.safe_dump(opt))
    assert test_cli.main(['-opt', str(option), '--root', str(root)]) == 0
    return root / 'results' / 'test_DnCNN_Set12_sigma25'


def _png(path: Path, value: int, size: tuple[int, int] = (24, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(size, value, np.uint8))


def synthetic_report(folder: Path, n_images: int = 100, n_models: int = 3, write_images: bool = True,
                     name_prefix: str = 'img', second_set: bool = False) -> tuple[Path, int]:
    """A report of ``n_images`` images x ``n_models`` models with made-up numbers (no model run); the inputs
    are a quarter of the ground truth's size, as for x4 SR. ``second_set``: also a 3-image set 'Other'."""
    rng = np.random.default_rng(0)
    metrics = [('psnr', 'PSNR', 2, 1), ('ssim', 'SSIM', 4, 1), ('lpips', 'LPIPS', 4, -1)]
    sides = [('gt', 'ground truth'), ('input', 'input'), *((f'm{k}', f'model_{k}') for k in range(n_models))]
    sets = []
    for set_name, n in (('Synth', n_images), ('Other', 3))[:2 if second_set else 1]:
        paths = {key: html_report.path_template(f'images/{set_name}/', f'.{key}.png') for key, _ in sides}
        images = []
        for i in range(n):
            name = f'{name_prefix}{i:04d}'
            values = {key: {'psnr': 20 + 10 * rng.random(), 'ssim': rng.random(), 'lpips': rng.random()}
                      for key, _ in sides[1:]}
            images.append(ReportImage(name, html_report.slug(name), 32, 24, values))
            if write_images:
                for k, (key, _) in enumerate(sides):
                    _png(folder / 'images' / set_name / f'{html_report.slug(name)}.{key}.png', 40 * k,
                         (6, 8) if key == 'input' else (24, 32))
        sets.append(ReportSet(set_name, paths, images))
    summary = [{'model': f'model_{k}', 'dataset': 'Synth', 'images': n_images, 'psnr': 25 + k, 'ssim': 0.8,
                'lpips': 0.2 - 0.01 * k, 'params': 1000 * (k + 1), 'gmacs': 1.5 * (k + 1)} for k in range(n_models)]
    columns = [Column('model', 'model'), Column('dataset', 'dataset'), Column('images', 'images', 'int'),
               Column('psnr', 'PSNR', 2), Column('ssim', 'SSIM', 4), Column('lpips', 'LPIPS', 4),
               Column('params', 'params', 'int'), Column('gmacs', 'GMACs', 2)]
    chart = html_report.svg_chart([dict(s, y=s['psnr']) for s in summary], [('gmacs', 'GMACs')], 'y', 'PSNR')
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / 'report.html'
    size = write_report(page, title='Synthetic', intro=['made-up numbers'], summary_columns=columns,
                        summary_rows=summary, metrics=metrics, sides=sides, sets=sets, pair=('m0', 'm1'),
                        chart_svg=chart)
    return page, size


# --------------------------------------------------------------------------------- without a browser

def test_page_stays_small_for_large_sets(tmp_path):
    page, size = synthetic_report(tmp_path, n_images=100, n_models=3, write_images=False)
    assert size == page.stat().st_size
    assert size < 200_000, f'{size} bytes for 100 images x 3 models'
    _, size_1000 = synthetic_report(tmp_path / 'big', n_images=1000, n_models=3, write_images=False)
    per_image = (size_1000 - size) / 900
    assert per_image < 400, per_image  # the page grows by the numbers of an image only, no markup, no images
    print(f'page: {size / 1024:.1f} KB for 100 images, {size_1000 / 1024:.1f} KB for 1,000 '
          f'({per_image:.0f} bytes per image with 4 scored sides x 3 metrics)')


def test_page_names_no_network_address_and_embeds_names_inertly(tmp_path):
    page, _ = synthetic_report(tmp_path, n_images=3, write_images=False, name_prefix='</script><b>x{{DATA}}')
    text = page.read_text(encoding='utf-8')
    assert not re.search(r'https?:|ftp:|//[a-z]|@import|url\(', text, re.I), 'the page must fetch nothing'
    assert text.count('</script>') == 2  # the data block and the code, the names cannot close either
    assert '<b>x' not in text
    data = report_data(text)
    assert data['sets'][0]['images'][0]['n'] == '</script><b>x{{DATA}}0000'
    assert data['sets'][0]['images'][0]['f'] == 'script_b_x_DATA_0000'  # a file-safe stem


def test_readme_shows_the_screenshot():
    root = Path(__file__).resolve().parents[2]
    assert '![report.html](docs/images/compare_report.png)' in (root / 'README.md').read_text(encoding='utf-8')
    assert '](images/compare_report.png)' in (root / 'docs' / 'compare.md').read_text(encoding='utf-8')
    assert cv2.imread(str(root / 'docs' / 'images' / 'compare_report.png')).shape[1] == 1100


def test_values_json_safe():
    assert html_report._number(float('inf')) == 'Infinity' and html_report._number(float('nan')) is None
    assert html_report._number(30.123456789) == 30.1235
    assert html_report._number(16_697_987) == 16_697_987 and html_report._number(np.int64(3)) == 3


def test_compare_report_files_and_numbers(zoo_report):
    text = (zoo_report / 'report.html').read_text(encoding='utf-8')
    data = report_data(text)
    assert [s[1] for s in data['sides']] == ['ground truth', 'input', *MODELS]
    (only_set,) = data['sets']
    assert only_set['name'] == 'Set12_crops' and [im['n'] for im in only_set['images']] == list(CROPS)
    for im in only_set['images']:
        for key, template in only_set['paths'].items():
            assert (zoo_report / template.replace('{}', im['n'])).is_file(), (key, im['n'])
        assert (im['w'], im['h']) == (192, 128)
        assert im['v']['input'][0] < im['v']['m0'][0] - 5  # PSNR: the noisy input is far below both models
    # the page's means are the CSV's
    import csv
    with open(zoo_report / 'comparison.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    cols = [c[0] for c in data['summary']['cols']]
    for row, page_row in zip(rows, data['summary']['rows']):
        assert page_row[cols.index('model')] == row['model']
        assert page_row[cols.index('psnr')] == pytest.approx(float(row['psnr']), abs=1e-4)
        per_image = [im['v'][f'm{MODELS.index(row["model"])}'][0] for im in only_set['images']]
        assert np.mean(per_image) == pytest.approx(float(row['psnr']), abs=1e-3)
    assert len(text.encode()) < 60_000


def test_basicsr_test_report_has_the_numbers_of_compare(run_report, zoo_report):
    page = run_report / 'report.html'
    data = report_data(page.read_text(encoding='utf-8'))
    assert [s[1] for s in data['sides']] == ['ground truth', 'input', 'test_DnCNN_Set12_sigma25']
    assert data['pair'] == ['input', 'm0']
    (run_set,) = data['sets']
    assert run_set['paths']['m0'].startswith('visualization/Set12/')  # the images basicsr test saved, linked
    for im in run_set['images']:
        for template in run_set['paths'].values():
            assert (run_report / template.replace('{}', im['n'])).is_file()
    # the same per-image values as basicsr compare's for that model (m1 there), PSNR and SSIM, and the same input
    compare_set = report_data((zoo_report / 'report.html').read_text(encoding='utf-8'))['sets'][0]
    for mine, theirs in zip(run_set['images'], compare_set['images']):
        assert mine['n'] == theirs['n']
        assert mine['v']['m0'] == theirs['v']['m1'][:2] and mine['v']['input'] == theirs['v']['input'][:2]
    for name in CROPS:  # the inputs are the same noisy images
        ours = cv2.imread(str(run_report / 'images' / 'Set12' / f'{name}.input.png'), cv2.IMREAD_UNCHANGED)
        theirs = cv2.imread(str(zoo_report / 'images' / 'Set12_crops' / f'{name}.input.png'), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(ours, theirs)


def test_report_option_values():
    from converse_plugin.errors import OptionError

    assert html_report.check_report_option({'val': {}}, 'x.yml') is False
    assert html_report.check_report_option({'val': {'report': None}}, 'x.yml') is False
    assert html_report.check_report_option({'val': {'report': True, 'save_img': True}}, 'x.yml') is True
    with pytest.raises(OptionError, match='x.yml: val:report is true but val:save_img is not'):
        html_report.check_report_option({'val': {'report': True}}, 'x.yml')
    with pytest.raises(OptionError, match="x.yml: val:report must be true or false, got 'yes'"):
        html_report.check_report_option({'val': {'report': 'yes', 'save_img': True}}, 'x.yml')
    assert html_report.run_report_hook({'val': {'report': True, 'save_img': True}, 'rank': 1}, 'x.yml') is None


# ------------------------------------------------------------------------------------------- browser

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f'no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set CONVERSE_CHROMIUM)')
    sync_api = pytest.importorskip('playwright.sync_api', reason='needs the playwright package (pip install playwright)')
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp('chromium_profile')), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={'width': 1280, 'height': 900}, device_scale_factor=1)
        yield context
        context.close()


class Opened:
    """A report page opened in the browser, with everything it logged and requested."""

    def __init__(self, context, report: Path):
        self.folder = report.parent.resolve()
        self.page = context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on('console', lambda m: self.errors.append(f'console {m.type}: {m.text}')
                     if m.type in ('error', 'warning') else None)
        self.page.on('pageerror', lambda e: self.errors.append(f'page error: {e}'))
        self.page.on('request', lambda r: self.requests.append(r.url))
        self.page.goto(report.resolve().as_uri())
        self.page.wait_for_load_state('load')
        self.page.wait_for_function('document.getElementById("img-a").complete && '
                                    'document.getElementById("img-b").complete')

    def check_offline(self) -> None:
        """No console error or warning, no page error, every request a file inside the report's folder."""
        from urllib.parse import unquote, urlparse
        assert not self.errors, self.errors
        for url in self.requests:
            parsed = urlparse(url)
            if parsed.scheme == 'data':
                continue
            assert parsed.scheme == 'file', url
            assert Path(unquote(parsed.path)).resolve().is_relative_to(self.folder), url

    def view(self) -> dict:
        return self.page.evaluate('window.reportView()')

    def screen(self) -> np.ndarray:
        """The viewport as a BGR array."""
        return cv2.imdecode(np.frombuffer(self.page.screenshot(), np.uint8), cv2.IMREAD_COLOR)

    def viewer_box(self) -> dict:
        self.page.locator('#viewer').scroll_into_view_if_needed()
        return self.page.locator('#viewer').bounding_box()

    def screen_point(self, x: int, y: int) -> tuple[float, float]:
        """The centre of image pixel (x, y) in viewport coordinates."""
        v, box = self.view(), self.viewer_box()
        return box['x'] + v['tx'] + v['scale'] * (x + 0.5), box['y'] + v['ty'] + v['scale'] * (y + 0.5)

    def image_pixel(self, sx: float, sy: float) -> tuple[int, int]:
        """The image pixel under viewport point (sx, sy)."""
        v, box = self.view(), self.viewer_box()
        return int((sx - box['x'] - v['tx']) // v['scale']), int((sy - box['y'] - v['ty']) // v['scale'])

    def select(self, left: str, right: str) -> None:
        self.page.select_option('#side-a', left)
        self.page.select_option('#side-b', right)
        self.page.wait_for_function('document.getElementById("img-a").complete && '
                                    'document.getElementById("img-b").complete')

    def move_split(self, to_x: float) -> None:
        """Drag the slider's handle to viewport x ``to_x``."""
        handle = self.page.locator('#handle').bounding_box()
        hx, hy = handle['x'] + handle['width'] / 2, handle['y'] + handle['height'] / 2
        self.page.mouse.move(hx, hy)
        self.page.mouse.down()
        self.page.mouse.move(to_x, hy, steps=5)
        self.page.mouse.up()


def _file(folder: Path, data: dict, side: str, image: int = 0) -> np.ndarray:
    s = data['sets'][0]
    im = s['images'][image]
    return cv2.imread(str(folder / s['paths'][side].replace('{}', im.get('f', im['n']))), cv2.IMREAD_GRAYSCALE)


def _gray(screen: np.ndarray, sx: float, sy: float) -> int:
    b, g, r = (int(c) for c in screen[int(sy), int(sx)])
    assert max(b, g, r) - min(b, g, r) <= 2, (b, g, r)  # a gray image stays gray on the screen
    return g


def test_zoo_report_loads_offline_and_lazily(browser, zoo_report):
    start = time.perf_counter()
    opened = Opened(browser, zoo_report / 'report.html')
    page = opened.page
    assert page.title() == 'Model comparison'
    assert page.locator('#summary-table tbody tr').count() == 2
    assert page.locator('#images-0 tbody tr').count() == 2
    # only the two sides on show are loaded: the first image of converse_dncnn and of kair_dncnn_sigma25
    assert page.locator('img[src]').count() == 2
    images = sorted(Path(u).name for u in opened.requests if u.endswith('.png'))
    assert images == ['05.m0.png', '05.m1.png'], opened.requests
    assert opened.view()['left'] == 'm0' and opened.view()['right'] == 'm1'
    # the chart names a model on hover
    point = page.locator('#chart .pt[data-model="kair_dncnn_sigma25"]').first
    label = point.locator('.lbl')
    assert label.evaluate('e => getComputedStyle(e).opacity') == '0'
    point.hover()
    assert label.evaluate('e => getComputedStyle(e).opacity') == '1' and label.text_content() == 'kair_dncnn_sigma25'
    # a row of the per-image table opens its image
    page.locator('#images-0 tbody tr', has_text='09').click()
    page.wait_for_function('window.reportView().image === 1 && document.getElementById("img-b").complete')
    assert page.locator('#img-a').get_attribute('src').endswith('09.m0.png')
    assert page.locator('#numbers').inner_text().startswith('2 / 2: 09')
    opened.check_offline()
    assert sorted(Path(u).name for u in opened.requests if u.endswith('.png')) == [
        '05.m0.png', '05.m1.png', '09.m0.png', '09.m1.png']
    page.close()
    print(f'browser: {time.perf_counter() - start:.1f} s')


def _column_values(page, table: str, column: int) -> list[str]:
    return page.locator(f'{table} tbody tr').evaluate_all(
        f'rows => rows.map(r => r.children[{column}].textContent)')


def test_sorting_reorders_rows(browser, zoo_report):
    opened = Opened(browser, zoo_report / 'report.html')
    page = opened.page
    data = report_data((zoo_report / 'report.html').read_text(encoding='utf-8'))
    head = page.locator('#summary-table thead th')
    labels = head.all_text_contents()
    for label, key in (('latency ms', 'latency_ms'), ('SSIM', 'ssim'), ('model', 'model')):
        j = labels.index(label)
        col = [c[0] for c in data['summary']['cols']].index(key)
        values = [r[col] for r in data['summary']['rows']]
        models = [r[0] for r in data['summary']['rows']]
        head.nth(j).click()
        first = _column_values(page, '#summary-table', 0)
        head.nth(j).click()
        second = _column_values(page, '#summary-table', 0)
        assert first == second[::-1] and first != second, (label, first, second)
        ascending = [m for _, m in sorted(zip(values, models))]
        assert ascending in (first, second), (label, ascending, first, second)
        assert head.nth(j).get_attribute('aria-sort') in ('ascending', 'descending')
    # the per-image table: images ordered by the noisy input's PSNR, then the other way round
    head = page.locator('#images-0 thead tr').last.locator('th')
    psnr_input = head.all_text_contents().index('input')  # the first 'input' column is PSNR's
    by_input = sorted(data['sets'][0]['images'], key=lambda im: im['v']['input'][0])
    head.nth(psnr_input).click()
    head.nth(psnr_input).click()
    assert _column_values(page, '#images-0', 0) in ([im['n'] for im in by_input], [im['n'] for im in by_input][::-1])
    order = _column_values(page, '#images-0', 0)
    head.nth(psnr_input).click()
    assert _column_values(page, '#images-0', 0) == order[::-1]
    opened.check_offline()
    page.close()


def _zoom_on(opened: Opened, x: int, y: int, clicks: int = 3) -> tuple[float, float]:
    """Wheel-zoom with the pointer on image pixel (x, y); returns where that pixel's centre is now."""
    sx, sy = opened.screen_point(x, y)
    opened.page.mouse.move(sx, sy)
    for _ in range(clicks):
        opened.page.mouse.wheel(0, -400)
    opened.page.wait_for_timeout(100)
    return opened.screen_point(x, y)


def test_slider_shows_either_model_at_a_probed_point(browser, zoo_report):
    opened = Opened(browser, zoo_report / 'report.html')
    data = report_data((zoo_report / 'report.html').read_text(encoding='utf-8'))
    a, b = _file(zoo_report, data, 'm0').astype(int), _file(zoo_report, data, 'm1').astype(int)
    diff = np.abs(a - b)
    diff[:8], diff[-8:], diff[:, :8], diff[:, -8:] = 0, 0, 0, 0  # not at the border: room to zoom around it
    y, x = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff[y, x] >= 6, 'the two denoisers give nearly the same pixels: no point to probe'
    opened.select('m0', 'm1')
    sx, sy = _zoom_on(opened, x, y)
    view = opened.view()
    assert view['scale'] >= 8
    assert opened.image_pixel(sx, sy) == (x, y)  # the wheel zoomed in around the pointer
    box = opened.viewer_box()
    # the split right of the probe: the left side (converse_dncnn) is shown there
    opened.move_split(min(sx + 60, box['x'] + box['width'] - 5))
    assert opened.view()['split'] > (sx - box['x']) / box['width']
    left_value = _gray(opened.screen(), sx, sy)
    # the split left of the probe: kair_dncnn_sigma25's pixel
    opened.move_split(max(sx - 60, box['x'] + 5))
    assert opened.view()['split'] < (sx - box['x']) / box['width']
    right_value = _gray(opened.screen(), sx, sy)
    assert abs(left_value - a[y, x]) <= 2 and abs(right_value - b[y, x]) <= 2, (left_value, right_value, a[y, x],
                                                                                 b[y, x])
    # the keyboard moves the split as well ([ and ])
    opened.page.locator('#viewer').focus()
    for _ in range(20):
        opened.page.keyboard.press(']')
    assert opened.view()['split'] == 1
    assert abs(_gray(opened.screen(), sx, sy) - a[y, x]) <= 2
    opened.check_offline()
    opened.page.close()


def test_zoom_and_pan_keep_both_sides_aligned(browser, zoo_report):
    opened = Opened(browser, zoo_report / 'report.html')
    page = opened.page
    data = report_data((zoo_report / 'report.html').read_text(encoding='utf-8'))
    opened.select('gt', 'input')
    gt, noisy = _file(zoo_report, data, 'gt').astype(int), _file(zoo_report, data, 'input').astype(int)
    _zoom_on(opened, 96, 64, clicks=2)
    viewer = page.locator('#viewer')
    viewer.focus()
    for key in ('+', 'ArrowLeft', 'ArrowUp', '+'):  # keyboard zoom and pan
        page.keyboard.press(key)
    box = opened.viewer_box()
    page.mouse.move(box['x'] + 200, box['y'] + 300)  # drag to pan (both sides)
    page.mouse.down()
    page.mouse.move(box['x'] + 170, box['y'] + 260, steps=4)
    page.mouse.up()
    view = opened.view()
    assert view['scale'] >= 8
    split_x = box['x'] + view['split'] * box['width']
    screen = opened.screen()
    checked = 0
    # on both sides of the split, every probed screen point shows the pixel the one transform puts there
    for dx in (-150, -90, -40, 40, 90, 150):
        for dy in (-120, -30, 60, 130):
            sx, sy = split_x + dx, box['y'] + box['height'] / 2 + dy
            ix, iy = opened.image_pixel(sx, sy)
            if not (0 <= ix < 192 and 0 <= iy < 128):
                continue
            # the centre of that image pixel, so that the probe is not on a pixel edge
            cx, cy = opened.screen_point(ix, iy)
            if abs(cx - split_x) < 8 or opened.image_pixel(cx, cy) != (ix, iy):
                continue
            expected = (gt if cx < split_x else noisy)[iy, ix]
            assert abs(_gray(screen, cx, cy) - expected) <= 2, (dx, dy, ix, iy)
            checked += 1
    assert checked >= 12
    # the same image on both sides: the picture is the same with the split there or moved away (no seam)
    opened.select('m0', 'm0')
    x0, x1 = int(split_x) - 40, int(split_x) + 40
    y0, y1 = int(box['y'] + 40), int(box['y'] + box['height'] - 10)  # below the side labels
    with_split = opened.screen()[y0:y1, x0:x1].astype(int)
    viewer.focus()
    for _ in range(20):
        page.keyboard.press('[')
    assert opened.view()['split'] == 0
    without = opened.screen()[y0:y1, x0:x1].astype(int)
    line = slice(40 - 20, 40 + 20)  # the divider and its handle
    away = np.ones(with_split.shape[1], bool)
    away[line] = False
    changed = np.argwhere(np.abs(with_split[:, away] - without[:, away]).max(axis=2) > 1)
    assert not len(changed), changed[:10]
    assert np.abs(with_split[:, line] - without[:, line]).max() > 50  # the divider was drawn there
    opened.check_offline()
    page.close()


def test_basicsr_test_report_in_the_browser(browser, run_report):
    """basicsr test's page: one model against its inputs, the slider between the input and the saved output."""
    opened = Opened(browser, run_report / 'report.html')
    page = opened.page
    assert page.locator('#side-a option').all_text_contents() == ['ground truth', 'input', 'test_DnCNN_Set12_sigma25']
    assert sorted(Path(u).name for u in opened.requests if u.endswith('.png')) == [
        '05.input.png', '05_test_DnCNN_Set12_sigma25.png']
    data = report_data((run_report / 'report.html').read_text(encoding='utf-8'))
    noisy, restored = _file(run_report, data, 'input').astype(int), _file(run_report, data, 'm0').astype(int)
    diff = np.abs(noisy - restored)
    diff[:8], diff[-8:], diff[:, :8], diff[:, -8:] = 0, 0, 0, 0
    y, x = np.unravel_index(np.argmax(diff), diff.shape)
    sx, sy = _zoom_on(opened, x, y)
    box = opened.viewer_box()
    opened.move_split(min(sx + 60, box['x'] + box['width'] - 5))
    assert abs(_gray(opened.screen(), sx, sy) - noisy[y, x]) <= 2
    opened.move_split(max(sx - 60, box['x'] + 5))
    assert abs(_gray(opened.screen(), sx, sy) - restored[y, x]) <= 2
    opened.check_offline()
    page.close()


def test_screenshot_for_the_docs(browser, zoo_report, tmp_path):
    """The README's screenshot: the summary, the noisy input against converse_dncnn and their numbers."""
    opened = Opened(browser, zoo_report / 'report.html')
    page = opened.page
    page.set_viewport_size({'width': 1100, 'height': 760})
    page.locator('#images-0 tbody tr', has_text='09').click()
    opened.select('input', 'm0')
    page.locator('#viewer').focus()
    page.keyboard.press('0')  # fit
    page.locator('#viewer').blur()
    top = page.locator('#summary').bounding_box()
    bottom = page.locator('#numbers').bounding_box()
    scroll = page.evaluate('[window.scrollX, window.scrollY]')
    clip = {'x': 0, 'y': top['y'] + scroll[1] - 4, 'width': 1100,
            'height': bottom['y'] + bottom['height'] - top['y'] + 12}
    shot = tmp_path / 'compare_report.png'
    page.screenshot(path=str(shot), clip=clip, full_page=True)
    opened.check_offline()
    page.close()
    img = cv2.imread(str(shot))
    assert img.shape[1] == 1100 and 500 < img.shape[0] < 1000
    target = os.environ.get('CONVERSE_REPORT_SCREENSHOTS')
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(Path(target) / 'compare_report.png'), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def test_synthetic_100_images_in_the_browser(browser, tmp_path):
    page_path, size = synthetic_report(tmp_path, n_images=100, n_models=3, name_prefix='a <b>&"', second_set=True)
    opened = Opened(browser, page_path)
    page = opened.page
    assert page.locator('#images-0 tbody tr').count() == 100
    assert page.locator('img[src]').count() == 2  # 515 image files beside the page, two loaded
    assert len([u for u in opened.requests if u.endswith('.png')]) == 2
    assert page.locator('#images-0 tbody tr').first.locator('td').first.text_content() == 'a <b>&"0000'
    # next image, a sort, a row: still two images shown
    page.click('#next')
    head = page.locator('#images-0 thead tr').last.locator('th')
    head.nth(1).click()
    page.locator('#images-0 tbody tr').nth(5).click()
    page.wait_for_function('document.getElementById("img-a").complete && document.getElementById("img-b").complete')
    assert page.locator('img[src]').count() == 2
    # an input smaller than the ground truth (x4 SR) covers the same screen area
    opened.select('input', 'gt')
    box_a, box_b = page.locator('#img-a').bounding_box(), page.locator('#img-b').bounding_box()
    assert all(abs(box_a[k] - box_b[k]) < 0.5 for k in ('x', 'y', 'width', 'height')), (box_a, box_b)
    assert page.evaluate('document.getElementById("img-a").naturalWidth') == 8
    # the second set: its images in the menu, its files shown
    page.select_option('#set', '1')
    page.wait_for_function('document.getElementById("img-a").complete && document.getElementById("img-b").complete')
    assert page.locator('#image option').count() == 3
    assert '/images/Other/' in page.locator('#img-a').evaluate('e => e.src')
    page.locator('#images-1 tbody tr').nth(2).click()
    assert opened.view()['set'] == 1 and opened.view()['image'] == 2
    opened.check_offline()
    page.close()
