"""Tiled against whole-image inference: Y-channel PSNR and peak memory of the released x4 ConverseMSRResNet
on Set14 (spec §4 protocol), the same computation ``val: tile`` runs in ``basicsr test``.

    .venv/bin/python benchmarks/bench_tiling.py [--tile 64] [--overlap 16] [--data ../shared/data/Set14/HR]
        [--checkpoint ../shared/zoo/converse_srresnet.pth] [--json benchmarks/results/tiling_cpu.json]

Prints a per-image table (PSNR whole, PSNR tiled, difference, peak MiB whole and tiled) and the means.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

import converse_plugin  # noqa: E402,F401
from basicsr.archs import build_network  # noqa: E402
from basicsr.data import build_dataset  # noqa: E402
from basicsr.utils import tensor2img  # noqa: E402

from benchmarks.memory import peak_bytes  # noqa: E402
from converse_plugin.metrics.psnr_ssim import calculate_psnr_y_matlab  # noqa: E402
from converse_plugin.models.tiling import tiled_forward  # noqa: E402

SHARED = osp.join(osp.dirname(REPO), 'shared')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tile', type=int, default=64, help='tile size in LR pixels')
    parser.add_argument('--overlap', type=int, default=16)
    parser.add_argument('--data', default=osp.join(SHARED, 'data', 'Set14', 'HR'))
    parser.add_argument('--checkpoint', default=osp.join(SHARED, 'zoo', 'converse_srresnet.pth'))
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', default=None)
    args = parser.parse_args(argv)

    net = build_network({'type': 'ConverseMSRResNet'})
    net.load_state_dict(torch.load(args.checkpoint, map_location='cpu', weights_only=True))
    net = net.to(args.device).eval()
    dataset = build_dataset({'name': 'Set14', 'type': 'BicubicDownsampleDataset', 'dataroot_gt': args.data,
                             'scale': 4, 'phase': 'test', 'io_backend': {'type': 'disk'}})
    rows = []
    print(f'# tiled ({args.tile}x{args.tile} LR pixels, overlap {args.overlap}) vs whole image, '
          f'ConverseMSRResNet x4, Set14, {args.device}')
    print(f"| {'image':<10} | {'LR size':>9} | {'PSNR whole':>10} | {'PSNR tiled':>10} | {'diff dB':>8} | "
          f"{'MiB whole':>9} | {'MiB tiled':>9} |")
    print(f"|{'-' * 12}|{'-' * 11}|{'-' * 12}|{'-' * 12}|{'-' * 10}|{'-' * 11}|{'-' * 11}|")
    for i in range(len(dataset)):
        item = dataset[i]
        lq, gt = item['lq'][None].to(args.device), tensor2img(item['gt'][None])
        outs = {}

        def run(kind):
            with torch.no_grad():
                outs[kind] = net(lq) if kind == 'whole' else tiled_forward(net, lq, args.tile, args.overlap, scale=4)

        mem = {kind: peak_bytes(lambda: run(kind), args.device) for kind in ('whole', 'tiled')}
        psnr = {kind: calculate_psnr_y_matlab(tensor2img(outs[kind]), gt, crop_border=4) for kind in outs}
        name = osp.splitext(osp.basename(item['gt_path']))[0]
        row = {'image': name, 'lr_size': list(lq.shape[-2:]), 'psnr_whole': psnr['whole'],
               'psnr_tiled': psnr['tiled'], 'peak_bytes_whole': mem['whole'], 'peak_bytes_tiled': mem['tiled']}
        rows.append(row)
        print(f"| {name:<10} | {lq.shape[-2]:>4}x{lq.shape[-1]:<4} | {psnr['whole']:10.4f} | {psnr['tiled']:10.4f} | "
              f"{psnr['tiled'] - psnr['whole']:+8.4f} | {mem['whole'] / 2**20:9.1f} | {mem['tiled'] / 2**20:9.1f} |")
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in ('psnr_whole', 'psnr_tiled')}
    print(f"mean PSNR: whole {mean['psnr_whole']:.4f}, tiled {mean['psnr_tiled']:.4f} "
          f"(diff {mean['psnr_tiled'] - mean['psnr_whole']:+.4f} dB); largest peak: whole "
          f"{max(r['peak_bytes_whole'] for r in rows) / 2**20:.1f} MiB, tiled "
          f"{max(r['peak_bytes_tiled'] for r in rows) / 2**20:.1f} MiB")
    out = args.json or osp.join(REPO, 'benchmarks', 'results', f'tiling_{args.device}.json')
    os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w', encoding='utf-8') as f:
        json.dump({'tile': args.tile, 'overlap': args.overlap, 'device': args.device, 'images': rows,
                   'mean': mean}, f, indent=2)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
