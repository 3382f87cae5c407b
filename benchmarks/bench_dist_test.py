"""Distributed testing speed-up: ``basicsr test`` on Set12 with the released ConverseDnCNN, one process vs
``torchrun --nproc_per_node N`` (gloo on the CPU; the images are split across the ranks, see
converse_plugin/engine/distributed_eval.py). Prints a table and writes JSON; the means must agree exactly.

    OMP_NUM_THREADS=1 python benchmarks/bench_dist_test.py [--procs 1 2] [--threads 1] [--json out.json]

Wall time is the whole command (start, imports, model load, 12 images); ``eval`` is the time between the
"Testing Set12..." log line and the validation log line (the part that is split).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from os import path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED = osp.join(osp.dirname(REPO), 'shared')
OPTION = osp.join(REPO, 'options', 'test', 'test_ConverseDnCNN_Set12_sigma25.yml')
NAME = 'test_ConverseDnCNN_Set12_sigma25'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stamp(line: str) -> float:
    return datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S,%f').timestamp()


def run(procs: int, threads: int, data: str, ckpt: str, save_img: bool) -> dict:
    root = tempfile.mkdtemp(prefix=f'bench_dist_{procs}_')
    args = ['test', '-opt', OPTION, '--root', root, '--force_yml', f'datasets:test_1:dataroot_gt={data}',
            f'path:pretrain_network_g={ckpt}', 'val:pbar=false', f'val:save_img={str(save_img).lower()}']
    if procs == 1:
        cmd = [sys.executable, '-m', 'converse_plugin', *args]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={procs}',
               f'--master_port={_free_port()}', '-m', 'converse_plugin', *args, '--launcher', 'pytorch']
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f'{cmd} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}')
    log_file = [f for f in os.listdir(osp.join(root, 'results', NAME)) if f.endswith('.log')][0]
    log = open(osp.join(root, 'results', NAME, log_file), encoding='utf-8').read().splitlines()
    begin = next(_stamp(line) for line in log if 'Testing Set12' in line)
    end = next(_stamp(line) for line in log if 'Validation Set12' in line)
    text = '\n'.join(log)
    psnr = float(re.search(r'# psnr: ([\d.]+)', text).group(1))
    ssim = float(re.search(r'# ssim: ([\d.]+)', text).group(1))
    return {'procs': procs, 'threads_per_proc': threads, 'wall_s': round(wall, 2), 'eval_s': round(end - begin, 2),
            'psnr': psnr, 'ssim': ssim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--threads', type=int, default=1, help='OMP_NUM_THREADS of each process')
    parser.add_argument('--data', default=osp.join(SHARED, 'data', 'Set12'))
    parser.add_argument('--ckpt', default=osp.join(SHARED, 'zoo', 'converse_dncnn.pth'))
    parser.add_argument('--save_img', action='store_true')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    rows = [run(p, args.threads, args.data, args.ckpt, args.save_img) for p in args.procs]
    base = rows[0]
    print(f'Set12, released ConverseDnCNN (64 x 20), CPU ({os.cpu_count()} cores visible), '
          f'OMP_NUM_THREADS={args.threads} per process')
    print(f"{'processes':>9} | {'wall s':>7} | {'eval s':>7} | {'speed-up (eval)':>15} | {'speed-up (wall)':>15} | "
          f"{'PSNR':>7} | {'SSIM':>6}")
    for r in rows:
        r['speedup_eval'] = round(base['eval_s'] / r['eval_s'], 2)
        r['speedup_wall'] = round(base['wall_s'] / r['wall_s'], 2)
        print(f"{r['procs']:>9} | {r['wall_s']:>7.1f} | {r['eval_s']:>7.1f} | {r['speedup_eval']:>15.2f} | "
              f"{r['speedup_wall']:>15.2f} | {r['psnr']:>7.4f} | {r['ssim']:>6.4f}")
    if any((r['psnr'], r['ssim']) != (base['psnr'], base['ssim']) for r in rows):
        raise SystemExit('the distributed means differ from the single-process ones')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=2)


if __name__ == '__main__':
    main()
