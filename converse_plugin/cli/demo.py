"""``basicsr demo``: train and validate a small ConverseDnCNN (gray, sigma = 25) on the CPU, offline.

1. Writes gray patches of the sample images that ship with scikit-image (a BasicSR dependency) and
   matplotlib to ``demo_data/train`` and ``demo_data/val`` under ``--root`` (default: the current
   directory); nothing is downloaded.
2. Trains with ``options/demo/demo_ConverseDnCNN_gray_sigma25.yml`` through BasicSR's train pipeline (its log
   lines show the progress), validating as it goes.
3. Denoises the validation patches with the final checkpoint and prints the PSNR of the noisy input and
   of the output, and where the checkpoint, the log and the images are. Exit status 1 if the gain is
   below :data:`MIN_GAIN_DB`.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections.abc import Sequence
from os import path as osp

import cv2
import numpy as np

# (file in scikit-image's data folder, or in matplotlib's sample_data) -> split
TRAIN_IMAGES = ('camera.png', 'astronaut.png', 'coffee.png', 'chelsea.png', 'rocket.jpg', 'coins.png',
                'moon.png', 'brick.png', 'gravel.png', 'grass.png', 'page.png')
VAL_IMAGES = ('grace_hopper.jpg', 'motorcycle_right.png')
TRAIN_PATCH, VAL_PATCH = 64, 96  # patch sizes
TRAIN_PER_IMAGE, VAL_PER_IMAGE = 24, 2
MIN_GAIN_DB = 5.0
DEFAULT_OPT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'options', 'demo',
                       'demo_ConverseDnCNN_gray_sigma25.yml')


def _find_sample(name: str) -> str | None:
    import matplotlib
    import skimage.data
    for folder in (skimage.data.data_dir, osp.join(matplotlib.get_data_path(), 'sample_data')):
        path = osp.join(folder, name)
        if osp.isfile(path):
            return path
    return None


def _gray(path: str) -> np.ndarray:
    """The image as uint8 gray (PIL, a matplotlib dependency: quiet about colour profiles, unlike libpng)."""
    from PIL import Image
    with Image.open(path) as img:
        return np.asarray(img.convert('L'))


def _patches(img: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """``count`` non-overlapping size x size patches spread evenly over the image, skipping flat ones."""
    grid = [img[top:top + size, left:left + size]
            for top in range(0, img.shape[0] - size + 1, size)
            for left in range(0, img.shape[1] - size + 1, size)]
    grid = [p for p in grid if p.std() >= 8]  # std < 8: sky, background
    step = max(len(grid) / count, 1.0)
    return [grid[int(i * step)] for i in range(min(count, len(grid)))]


def make_demo_data(folder: str) -> dict[str, int]:
    """Write ``folder/train`` (64 x 64) and ``folder/val`` (96 x 96) gray PNG patches of the sample images
    (at their own resolution); returns the counts.

    Reuses the folders if they already hold patches. Images that are absent from the installed
    packages are skipped; it is an error if no training or no validation image is found.
    """
    counts = {}
    for split, names, size, count in (('train', TRAIN_IMAGES, TRAIN_PATCH, TRAIN_PER_IMAGE),
                                      ('val', VAL_IMAGES, VAL_PATCH, VAL_PER_IMAGE)):
        out_dir = osp.join(folder, split)
        existing = glob.glob(osp.join(out_dir, '*.png'))
        if existing:
            counts[split] = len(existing)
            continue
        sources = [p for p in map(_find_sample, names) if p is not None]
        if not sources:
            raise FileNotFoundError(f'no demo {split} image found: looked for {", ".join(names)} in the data '
                                    'folders of scikit-image and matplotlib')
        os.makedirs(out_dir, exist_ok=True)
        n = 0
        for path in sources:
            stem = osp.splitext(osp.basename(path))[0]
            for i, patch in enumerate(_patches(_gray(path), size, count)):
                cv2.imwrite(osp.join(out_dir, f'{stem}_{i:03d}.png'), patch)
                n += 1
        counts[split] = n
    return counts


def evaluate(opt: dict, checkpoint: str, out_dir: str) -> list[tuple[str, float, float]]:
    """Denoise the validation set of ``opt`` with ``checkpoint``; write noisy/restored PNGs to
    ``out_dir``; return (name, PSNR noisy, PSNR restored) per image, PSNR in dB on uint8 images."""
    import torch
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import imwrite, tensor2img

    from converse_plugin.io.checkpoint import load_state_dict_file
    from converse_plugin.registries import build_network

    net = build_network(dict(opt['network_g'])).eval()
    net.load_state_dict(load_state_dict_file(checkpoint))  # params_ema (the EMA weights), else params
    val_opt = dict(opt['datasets']['val'], phase='val')
    dataset = build_dataset(val_opt)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    with torch.no_grad():
        for item in dataset:
            name = osp.splitext(osp.basename(item['lq_path']))[0]
            output = net(item['lq'][None])[0]
            # tensor2img clamps its input in place: give it copies
            gt, noisy, restored = (tensor2img(t.clone()) for t in (item['gt'], item['lq'], output))
            imwrite(noisy, osp.join(out_dir, f'{name}_noisy.png'))
            imwrite(restored, osp.join(out_dir, f'{name}_restored.png'))
            rows.append((name, calculate_psnr(noisy, gt, 0), calculate_psnr(restored, gt, 0)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='basicsr demo', description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default=None, help='where demo_data/ and experiments/ go (default: current dir)')
    parser.add_argument('--opt', default=DEFAULT_OPT, help='demo option file (default: %(default)s)')
    parser.add_argument('--force_yml', nargs='+', default=[], metavar='KEY:KEY=VALUE',
                        help='override demo options, e.g. train:total_iter=3000 (BasicSR syntax)')
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    import torch

    from converse_plugin.engine.options import OptionError, apply_force_yml, load_options
    from converse_plugin.cli.train import main as train_main

    root = osp.abspath(args.root or os.getcwd())
    data = osp.join(root, 'demo_data')
    force = [f'datasets:train:dataroot_gt={osp.join(data, "train")}',
             f'datasets:val:dataroot_gt={osp.join(data, "val")}', *args.force_yml]
    try:
        opt = load_options(args.opt)
        apply_force_yml(opt, force)
    except OptionError as err:
        hint = " (the demo options live in the repository's options/demo/)" if args.opt == DEFAULT_OPT else ''
        print(f'basicsr demo: error: {err}{hint}', file=sys.stderr)
        return 2
    # One thread unless OMP_NUM_THREADS says otherwise: the network is small, and on a shared machine
    # threads that wait on each other make a step many times slower (measured: 3.5 s instead of 0.09 s).
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))

    start = time.time()
    counts = make_demo_data(data)
    print(f'Demo data: {counts["train"]} training and {counts["val"]} validation gray patches in {data}', flush=True)
    status = train_main(['-opt', args.opt, '--root', root, '--force_yml', *force])
    if status:
        return status

    exp = osp.join(root, 'experiments', opt['name'])
    checkpoint = osp.join(exp, 'models', 'net_g_latest.pth')
    images = osp.join(exp, 'demo_results')
    rows = evaluate(opt, checkpoint, images)
    logs = sorted(glob.glob(osp.join(exp, f'train_{opt["name"]}_*.log')))

    noisy = float(np.mean([r[1] for r in rows]))
    restored = float(np.mean([r[2] for r in rows]))
    minutes, seconds = divmod(int(time.time() - start), 60)
    sigma = opt['datasets']['val']['sigma']
    print(f'\nDemo finished in {minutes} min {seconds:02d} s. Gray denoising, sigma = {sigma}, '
          f'{len(rows)} validation patches:')
    for name, p_noisy, p_restored in rows:
        print(f'  {name:<28} noisy {p_noisy:6.2f} dB   restored {p_restored:6.2f} dB')
    print(f'  {"mean":<28} noisy {noisy:6.2f} dB   restored {restored:6.2f} dB   gain {restored - noisy:+.2f} dB')
    print(f'Checkpoint: {checkpoint}')
    print(f'Log:        {logs[-1] if logs else exp}')
    print(f'Images:     {images} (*_noisy.png, *_restored.png)')
    if restored - noisy < MIN_GAIN_DB:
        print(f'basicsr demo: the gain is below {MIN_GAIN_DB} dB: training did not work as expected', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
