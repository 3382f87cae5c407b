"""``basicsr compare --models A B ... [--datasets D ...] --out DIR``: several models, the same test sets.

A model is a test option file (its ``network_g``, ``path`` and ``model_type``; ``zoo:NAME`` checkpoints
allowed) or a zoo name (``converse_dncnn``, ``kair_dncnn_sigma25``, ...; checkpoint from ``--zoo-dir``
/ ``$CONVERSE_ZOO_DIR``). The test sets are, in this order: ``--datasets`` entries (an option file:
all its ``datasets``; a folder: the first model's first test set with ``dataroot_gt`` replaced), else the
first model's test sets. The metrics are the first model's ``val.metrics`` plus LPIPS (AlexNet; skip with
``--no-lpips``). Every model sees the same degraded inputs (the datasets are deterministic) and is scored
by the same code as ``basicsr test`` (BasicSR's model ``feed_data``/``test``/``tensor2img`` and
``calculate_metric``), so the numbers equal that command's.

Written to ``--out``: ``comparison.md`` and ``comparison.csv`` (one row per model and test set:
metrics, params, MACs with FFTs, latency and peak memory for ``--input-size``), ``quality_vs_cost.png``
and ``crops/<dataset>_<image>.png`` (input | each model | ground truth) for ``--crops`` images (default:
the first image of each set); unless ``--no-html``, ``report.html`` (:mod:`converse_plugin.engine.html_report`:
sortable tables, a before/after slider with one zoom for both sides, the chart; offline) with every image of
every model under ``images/<dataset>/``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from converse_plugin.engine.allocator import add_cpu_allocator_argument, setup_cpu_allocator
from converse_plugin.engine.compare_report import ModelCost, Row, crop_montage, write_chart, write_csv, write_markdown
from converse_plugin.engine.options import OptionError, load_options, parse_options
from converse_plugin.engine.memory import peak_bytes

__all__ = ['ModelSpec', 'load_model_spec', 'comparison_datasets', 'measure_cost', 'evaluate', 'run_compare', 'main']


@dataclass
class ModelSpec:
    """A model to compare: a label, its BasicSR test options and, for zoo models, the zoo entry."""
    label: str
    opt: dict[str, Any]
    published: dict[str, float]


def _device_opt(num_gpu: Any) -> int:
    if num_gpu == 'auto' or num_gpu is None:
        return torch.cuda.device_count()
    return int(num_gpu)


def load_model_spec(spec: str, zoo_directory: str | None = None, cpu: bool = False) -> ModelSpec:
    """A model from a test option file or a zoo name (see the module docstring)."""
    from converse_plugin.zoo import ZOO, ZOO_PREFIX, checkpoint_path, get_entry

    name = spec[len(ZOO_PREFIX):] if spec.startswith(ZOO_PREFIX) else spec
    if name in ZOO:
        entry = get_entry(name)
        opt = {'name': entry.name, 'model_type': entry.model_type, 'scale': entry.scale, 'num_gpu': 'auto',
               'is_train': False, 'dist': False, 'rank': 0, 'world_size': 1,
               'network_g': copy.deepcopy(entry.network_g),
               'path': {'pretrain_network_g': str(checkpoint_path(name, zoo_directory)), 'param_key_g': None,
                        'strict_load_g': True},
               'val': {'metrics': copy.deepcopy(entry.metrics)},
               'datasets': {'test_1': {**copy.deepcopy(entry.test_dataset), 'phase': 'test', 'scale': entry.scale}}}
        published = entry.published
    elif spec.endswith(('.yml', '.yaml')) or os.path.isfile(spec):
        argv = ['-opt', spec]
        if zoo_directory:
            raw = load_options(spec)
            if isinstance(raw.get('path'), dict) and 'zoo_dir' in raw['path']:
                argv += ['--force_yml', f'path:zoo_dir={zoo_directory}']
            else:
                os.environ.setdefault('CONVERSE_ZOO_DIR', zoo_directory)
        opt, _ = parse_options(os.getcwd(), is_train=False, argv=argv)
        published = {}
    else:
        raise OptionError(f'--models: {spec!r} is neither an option file nor a zoo name ({", ".join(ZOO)})')
    opt['num_gpu'] = 0 if cpu else _device_opt(opt.get('num_gpu'))
    return ModelSpec(str(opt['name']), opt, dict(published))


def comparison_datasets(entries: Sequence[str], first: ModelSpec) -> list[dict[str, Any]]:
    """BasicSR test-set options for the comparison (see the module docstring)."""
    template = [d for d in first.opt.get('datasets', {}).values() if isinstance(d, dict)]
    if not entries:
        if not template:
            raise OptionError(f'{first.label}: no test datasets; pass --datasets')
        return [copy.deepcopy(d) for d in template]
    out = []
    for entry in entries:
        if os.path.isdir(entry):
            if not template:
                raise OptionError(f'--datasets {entry}: a folder needs a first model with a test set to copy')
            ds = copy.deepcopy(template[0])
            ds.update(dataroot_gt=entry, name=Path(entry.rstrip('/')).name)
            if ds['name'] == 'HR':
                ds['name'] = Path(entry.rstrip('/')).parent.name
            out.append(ds)
        elif os.path.isfile(entry):
            sets = load_options(entry).get('datasets')
            if not isinstance(sets, dict) or not sets:
                raise OptionError(f'--datasets {entry}: expected a datasets: mapping of test sets')
            for phase, d in sets.items():
                if not isinstance(d, dict):
                    raise OptionError(f'{entry}: datasets:{phase} must be a mapping of dataset options, got {d!r}')
                out.append(dict(copy.deepcopy(d), phase='test'))
        else:
            raise OptionError(f'--datasets {entry}: no such folder or option file')
    from converse_plugin.engine.validate import check_test_dataset
    for i, ds in enumerate(out):
        if not isinstance(ds, dict):
            raise OptionError(f'--datasets: test set {i + 1} must be a mapping of dataset options, got {ds!r}')
        ds.setdefault('phase', 'test')
        ds['scale'] = first.opt.get('scale', 1)
        for key in ('dataroot_gt', 'dataroot_lq'):
            if isinstance(ds.get(key), str):
                ds[key] = os.path.expanduser(ds[key])
        check_test_dataset(' '.join(entries) or first.label, f'datasets:{ds.get("name", i + 1)}', ds)
    return out


def _peak_memory_mb(net: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Peak tensor memory of one forward (CUDA allocator peak, or PyTorch's memory profiler on the CPU)."""
    def forward():
        with torch.no_grad():
            net(*inputs)

    return peak_bytes(forward, 'cuda' if inputs[0].is_cuda else 'cpu') / 2**20


def measure_cost(net: torch.nn.Module, input_size: Sequence[int], repeat: int = 3) -> ModelCost:
    """Params, MACs (FFTs counted), median latency over ``repeat`` runs after one warm-up, peak memory."""
    from converse_plugin.engine.complexity import analyze, example_inputs

    net = net.eval()
    cpu_inputs = example_inputs(net, input_size)
    report = analyze(net, cpu_inputs)
    device = next(net.parameters()).device
    inputs = tuple(t.to(device) for t in cpu_inputs)
    times = []
    with torch.no_grad():
        for i in range(repeat + 1):
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(*inputs)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            if i:  # the first run warms up (and fills Converse2D's filter cache, as at inference)
                times.append(1000 * (time.perf_counter() - start))
    return ModelCost(params=report.params, macs=report.macs, fft_macs=report.fft_macs,
                     latency_ms=statistics.median(times), peak_mem_mb=_peak_memory_mb(net, inputs),
                     input_size='x'.join(map(str, input_size)))


def _published(spec: ModelSpec, dataset: str) -> dict[str, float]:
    return {k: v for k, v in spec.published.items() if k.split(' ')[0] == dataset}


def evaluate(model: Any, loader: Any, metrics: dict[str, dict], lpips_opt: dict | None,
             crop_names: set[str] | None, matched: set[str] | None = None,
             on_image: Callable[[int, str, dict[str, np.ndarray], dict[str, float]], None] | None = None
             ) -> tuple[dict[str, float], int, dict[str, dict[str, np.ndarray]]]:
    """Mean metrics of ``model`` on ``loader`` exactly as BasicSR's validation computes them, plus the
    (input, output, ground truth) images of ``crop_names`` (None: of the first image). A crop name matches
    an input's name or its ground truth's (``101085`` picks ``101085_k1``, ``101085_k2``, ...); the names
    that matched are added to ``matched``. ``on_image(index, name, images, values)`` sees every image (the
    report's per-image values and files)."""
    from basicsr.metrics import calculate_metric
    from basicsr.utils import tensor2img

    sums: dict[str, float] = {}
    count = 0
    kept: dict[str, dict[str, np.ndarray]] = {}
    all_metrics = dict(metrics, **({'lpips': lpips_opt} if lpips_opt else {}))
    for data in loader:
        name = os.path.splitext(os.path.basename(data['lq_path'][0]))[0]
        gt_name = os.path.splitext(os.path.basename(data.get('gt_path', data['lq_path'])[0]))[0]
        model.feed_data(data)
        model.test()
        visuals = model.get_current_visuals()
        sr_img = tensor2img([visuals['result']])
        gt_img = tensor2img([visuals['gt']])
        values = {}
        for key, opt_ in all_metrics.items():
            values[key] = float(calculate_metric({'img': sr_img, 'img2': gt_img}, copy.deepcopy(opt_)))
            sums[key] = sums.get(key, 0.0) + values[key]
        if crop_names is None:
            keep = count == 0
        else:
            hits = {name, gt_name} & crop_names
            if matched is not None:
                matched |= hits
            keep = bool(hits)
        if keep or on_image:
            imgs = {'input': tensor2img([visuals['lq']]), 'output': sr_img, 'gt': gt_img}
            if keep:
                kept[name] = imgs
            if on_image:
                on_image(count, name, imgs, values)
        del model.lq, model.output, model.gt
        count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}, count, kept


def run_compare(models: Sequence[str], out_dir: str, datasets: Sequence[str] = (), zoo_directory: str | None = None,
                input_size: str | None = None, use_lpips: bool = True, lpips_net: str = 'alex',
                crops: Sequence[str] = (), crop_size: int = 96, repeat: int = 3, cpu: bool = False,
                cpu_allocator: str = 'cache', html: bool = True) -> list[Row]:
    """Run the comparison and write the report files; returns the rows of the table. On the CPU, glibc keeps
    freed memory for the next image with ``cpu_allocator`` 'cache' (:mod:`converse_plugin.engine.allocator`):
    the latency column then has no page faults of fresh memory in it; the report says which was used.
    ``html``: also ``report.html`` and its ``images/`` (:mod:`converse_plugin.engine.html_report`)."""
    import converse_plugin  # noqa: F401  (registries)
    from basicsr.data import build_dataloader, build_dataset
    from converse_plugin.engine.build import build_model  # the plugin's checkpoint policy: safe, checked loads

    from converse_plugin.engine.complexity import parse_input_size

    if len(models) < 1:
        raise OptionError('--models: name at least one model')
    specs = [load_model_spec(m, zoo_directory, cpu) for m in models]
    scales = {s.opt.get('scale', 1) for s in specs}
    if len(scales) > 1:
        raise OptionError(f'--models: the models have different scales {sorted(scales)}; compare like with like')
    on_cpu = not specs[0].opt['num_gpu']
    cached = setup_cpu_allocator(cpu_allocator, '--cpu-allocator', torch.device('cpu' if on_cpu else 'cuda'),
                                 lambda line: None)
    test_sets = comparison_datasets(datasets, specs[0])
    metrics = copy.deepcopy(specs[0].opt.get('val', {}).get('metrics') or {})
    if not metrics:
        raise OptionError(f'{specs[0].label}: val: metrics is empty; nothing to compare')
    lpips_opt = None
    if use_lpips:
        from converse_plugin.metrics.lpips_metric import build_lpips
        border = next((m.get('crop_border', 0) for m in metrics.values() if isinstance(m, dict)), 0)
        lpips_opt = {'type': 'calculate_lpips', 'net': lpips_net, 'crop_border': border}
        build_lpips(lpips_net)  # fail early (BackboneError says how to fill the cache)
    out = Path(out_dir)
    (out / 'crops').mkdir(parents=True, exist_ok=True)

    loaders = []
    for ds_opt in test_sets:
        dataset = build_dataset(ds_opt)
        loader = build_dataloader(dataset, ds_opt, num_gpu=0, dist=False, sampler=None, seed=0)
        loaders.append((str(ds_opt.get('name', 'test')), loader))
    rows: list[Row] = []
    matched: set[str] = set()
    images: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    all_metrics = dict(metrics, **({'lpips': lpips_opt} if lpips_opt else {}))
    pages = _ReportImages(out, [name for name, _ in loaders], all_metrics) if html else None
    for k, spec in enumerate(specs):
        model = build_model(spec.opt)
        net = model.get_bare_model(model.net_g)
        c = int(spec.opt['network_g'].get('num_in_ch', 3))
        size = parse_input_size(input_size.replace('C', str(c)) if input_size else f'1x{c}x256x256')
        cost = measure_cost(net, size, repeat)
        for d, (ds_name, loader) in enumerate(loaders):
            wanted = set(crops) if crops else None
            start = time.perf_counter()
            values, n, kept = evaluate(model, loader, metrics, lpips_opt, wanted, matched,
                                       pages.collector(k, d) if pages else None)
            print(f'{spec.label} on {ds_name}: {n} images in {time.perf_counter() - start:.0f} s', file=sys.stderr,
                  flush=True)
            rows.append(Row(spec.label, ds_name, n, values, cost, _published(spec, ds_name)))
            for img_name, imgs in kept.items():
                per_image = images.setdefault(f'{ds_name}_{img_name}', {})
                per_image.setdefault('input', imgs['input'])
                per_image.setdefault('gt', imgs['gt'])
                per_image[spec.label] = imgs['output']
        del model, net
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    for name in sorted(set(crops) - matched):
        print(f'basicsr compare: warning: --crops {name}: no image of that name in the test sets', file=sys.stderr)
    device = (f'CPU ({torch.get_num_threads()} threads, allocator {"cache" if cached else "system"})' if on_cpu
              else torch.cuda.get_device_name(0))
    labels = [s.label for s in specs]
    for key, imgs in images.items():
        panels = [('input', imgs['input'])] + [(lb, imgs[lb]) for lb in labels if lb in imgs] + [('GT', imgs['gt'])]
        cv2.imwrite(str(out / 'crops' / f'{key}.png'), crop_montage(panels, crop_size))
    metric_key = 'psnr' if 'psnr' in metrics else next(iter(metrics))
    chart = write_chart(rows, out / 'quality_vs_cost.png', metric_key)
    write_csv(rows, out / 'comparison.csv', device)
    used = ', '.join(f"{k} = {v.get('type')}" for k, v in metrics.items())
    notes = [f'Metrics: {used}' + (f', lpips = calculate_lpips ({lpips_net})' if lpips_opt else '') + '.',
             '![quality vs cost](quality_vs_cost.png)' if chart else '(matplotlib missing: no chart)',
             *[f'![{k}](crops/{k}.png)' for k in images]]
    if pages:
        size = pages.write(out / 'report.html', rows, labels, metric_key, device, notes[0])
        notes.append(f'Open report.html in a browser: slider, zoom, every image ({size / 1024:.0f} KB page).')
    write_markdown(rows, out / 'comparison.md', device, notes)
    return rows


class _ReportImages:
    """Collects what report.html shows while the models run: each image of each test set written once as
    PNG (ground truth, input, each model's output under ``images/<set>/``) and its per-image metrics (the
    input's too when it has the ground truth's size)."""

    def __init__(self, out: Path, set_names: Sequence[str], metrics: dict[str, dict]):
        from converse_plugin.engine.html_report import ReportSet, path_template, slug

        self.out, self.metrics = out, metrics
        taken: set[str] = set()
        self.folders = [slug(name, taken) for name in set_names]
        self.stems: list[set[str]] = [set() for _ in set_names]
        self.sets = [ReportSet(name, {'gt': path_template(f'images/{f}/', '.gt.png'),
                                      'input': path_template(f'images/{f}/', '.input.png')})
                     for name, f in zip(set_names, self.folders)]

    def _png(self, d: int, stem: str, side: str, img: np.ndarray) -> None:
        from converse_plugin.engine.html_report import write_png
        write_png(self.out / 'images' / self.folders[d] / f'{stem}.{side}.png', img)

    def collector(self, k: int, d: int) -> Callable[[int, str, dict[str, np.ndarray], dict[str, float]], None]:
        from basicsr.metrics import calculate_metric
        from converse_plugin.engine.html_report import ReportImage, path_template, slug

        report_set = self.sets[d]
        report_set.paths[f'm{k}'] = path_template(f'images/{self.folders[d]}/', f'.m{k}.png')

        def on_image(index: int, name: str, imgs: dict[str, np.ndarray], values: dict[str, float]) -> None:
            if index == len(report_set.images):  # the first model to see this image
                gt, lq = imgs['gt'], imgs['input']
                image = ReportImage(name, slug(name, self.stems[d]), int(gt.shape[1]), int(gt.shape[0]))
                self._png(d, image.stem, 'gt', gt)
                self._png(d, image.stem, 'input', lq)
                if lq.shape == gt.shape:
                    image.values['input'] = {key: float(calculate_metric({'img': lq, 'img2': gt}, copy.deepcopy(o)))
                                             for key, o in self.metrics.items()}
                report_set.images.append(image)
            image = report_set.images[index]
            if image.name != name:
                raise RuntimeError(f'{report_set.name}: image {index} is {name!r} for this model, {image.name!r} '
                                   'for the first: the test set must give its images in the same order')
            self._png(d, image.stem, f'm{k}', imgs['output'])
            image.values[f'm{k}'] = dict(values)
        return on_image

    def write(self, path: Path, rows: Sequence[Row], labels: Sequence[str], metric_key: str, device: str,
              metrics_note: str) -> int:
        from converse_plugin.engine.html_report import Column, metric_columns, svg_chart, write_report

        mcols = metric_columns(self.metrics)
        summary = [{'model': r.model, 'dataset': r.dataset, 'images': r.images, **r.metrics,
                    'published': ', '.join(f'{k} {v:g}' for k, v in r.published.items()),
                    'params': r.cost.params, 'gmacs': r.cost.macs / 1e9, 'fft_gmacs': r.cost.fft_macs / 1e9,
                    'latency_ms': r.cost.latency_ms, 'peak_mem_mb': r.cost.peak_mem_mb} for r in rows]
        columns = [Column('model', 'model'), Column('dataset', 'dataset'), Column('images', 'images', 'int'),
                   *(Column(k, lab, dg) for k, lab, dg, _ in mcols), Column('published', 'published'),
                   Column('params', 'params', 'int'), Column('gmacs', 'GMACs', 2),
                   Column('fft_gmacs', 'of which FFT', 2), Column('latency_ms', 'latency ms', 1),
                   Column('peak_mem_mb', 'peak MB', 1)]
        label = metric_key.upper()
        points = [{'model': s['model'], 'dataset': s['dataset'], 'y': s.get(metric_key, float('nan')),
                   'gmacs': s['gmacs'], 'latency_ms': s['latency_ms']} for s in summary]
        chart = svg_chart(points, [('gmacs', 'GMACs (FFTs counted)'), ('latency_ms', 'latency (ms)')], 'y', label)
        cost_input = rows[0].cost.input_size if rows else '?'
        sides = [('gt', 'ground truth'), ('input', 'input'), *((f'm{k}', lb) for k, lb in enumerate(labels))]
        pair = ('m0', 'm1') if len(labels) > 1 else ('input', 'm0')
        return write_report(path, title='Model comparison', intro=[
            f'Device: {device}. Cost columns for one input of {cost_input} (B x C x H x W); MACs count FFTs; '
            'latency is the median forward time; peak MB the peak tensor memory of one forward.', metrics_note,
            'The same numbers: comparison.md, comparison.csv.'],
            summary_columns=columns, summary_rows=summary, metrics=mcols, sides=sides, sets=self.sets,
            pair=pair, chart_svg=chart)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr compare', description='compare models on the same test sets')
    parser.add_argument('--models', nargs='+', required=True, help='test option files and/or zoo names')
    parser.add_argument('--datasets', nargs='*', default=[], help='option files (their datasets) or image folders')
    parser.add_argument('--out', default='results/compare', help='output folder (default results/compare)')
    parser.add_argument('--zoo-dir', default=None, help='zoo directory (default $CONVERSE_ZOO_DIR or the user cache)')
    parser.add_argument('--input-size', default=None,
                        help='BxCxHxW for params/MACs/latency/memory; C may be the letter C for each model\'s '
                             'input channels (default 1xCx256x256)')
    parser.add_argument('--no-lpips', action='store_true', help='skip LPIPS')
    parser.add_argument('--lpips-net', default='alex', choices=['alex', 'vgg'])
    parser.add_argument('--crops', nargs='*', default=[], help='image names (no extension) for the crop montages')
    parser.add_argument('--crop-size', type=int, default=96, help='crop side in ground-truth pixels (default 96)')
    parser.add_argument('--repeat', type=int, default=3, help='timed forward runs after one warm-up (default 3)')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU even when CUDA is available')
    parser.add_argument('--no-html', action='store_true',
                        help='skip report.html and its images/ (every image of every model as PNG)')
    add_cpu_allocator_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from converse_plugin.errors import UserError
    from converse_plugin.metrics.lpips_backbone import BackboneError
    try:
        run_compare(args.models, args.out, args.datasets, args.zoo_dir, args.input_size, not args.no_lpips,
                    args.lpips_net, args.crops, args.crop_size, args.repeat, args.cpu, args.cpu_allocator,
                    not args.no_html)
    except (UserError, BackboneError) as err:
        print(f'basicsr compare: error: {err}', file=sys.stderr)
        return 2
    print((Path(args.out) / 'comparison.md').read_text(encoding='utf-8'))
    if not args.no_html:
        print(f'basicsr compare: open {Path(args.out) / "report.html"} in a browser', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
