"""Shared pieces of the distributed end-to-end tests: free ports, torchrun command lines, a wrapper script
that records what each rank did (final weights, device, per-image metrics), and a tiny test checkpoint."""
from __future__ import annotations

import glob
import json
import os
import socket
import sys
from os import path as osp

import torch

OPTION = 'train_ConverseDnCNN_gray_sigma25.yml'
NAME = 'train_ConverseDnCNN_gray_sigma25'
TEST_OPTION_NAME = 'test_ConverseDnCNN_Set12_sigma25'

# The CLI, with records in $DUMP_DIR: final_rank<R>.pth (the network at the end), env_rank<R>.json
# (RANK, LOCAL_RANK, device), metrics_rank<R>.json (per image: every metric value each rank computed) and
# means_rank<R>.json (the logged means). On a restarted worker (TORCHELASTIC_RESTART_COUNT > 0) the test
# hook that pauses a save is switched off; KILL_AT_ITER=<rank>:<iter> SIGKILLs that rank at that iteration
# of the first attempt.
DUMP_SCRIPT = '''
import atexit, json, os, signal, sys
import torch
import torch.distributed as dist
import converse_plugin
import basicsr.metrics
import basicsr.models.sr_model as sr_model
from basicsr.models.sr_model import SRModel
from converse_plugin.cli import main
from converse_plugin.io.checkpoint import SLOW_SAVE_ENV
from converse_plugin.models.base_model import PluginModel

OUT = os.environ['DUMP_DIR']
FIRST_ATTEMPT = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') == '0'
if not FIRST_ATTEMPT:
    os.environ.pop(SLOW_SAVE_ENV, None)
KILL = os.environ.get('KILL_AT_ITER')
records, current = {}, {}

_rank = [0]

def rank():  # remembered: at exit the command has already left its process group
    if dist.is_available() and dist.is_initialized():
        _rank[0] = dist.get_rank()
    return _rank[0]

_save, _feed, _opt = PluginModel.save, SRModel.feed_data, SRModel.optimize_parameters
_metric, _log = basicsr.metrics.calculate_metric, SRModel._log_validation_metric_values

def save(self, epoch, current_iter, progress=None):
    _save(self, epoch, current_iter, progress)
    if current_iter == -1:
        torch.save(self.get_bare_model(self.net_g).state_dict(), os.path.join(OUT, f'final_rank{rank()}.pth'))

def feed_data(self, data):
    if 'lq_path' in data:
        current['img'] = os.path.basename(data['lq_path'][0])
    if not os.path.exists(os.path.join(OUT, f'env_rank{rank()}.json')):
        with open(os.path.join(OUT, f'env_rank{rank()}.json'), 'w') as f:
            json.dump({'RANK': os.environ.get('RANK'), 'LOCAL_RANK': os.environ.get('LOCAL_RANK'),
                       'device': str(self.device), 'world': dist.get_world_size() if dist.is_initialized() else 1}, f)
    _feed(self, data)

def optimize_parameters(self, current_iter):
    if KILL and FIRST_ATTEMPT and KILL == f'{rank()}:{current_iter}':
        os.kill(os.getpid(), signal.SIGKILL)
    _opt(self, current_iter)

def calculate_metric(data, opt):
    value = _metric(data, opt)
    records.setdefault(current.get('img', '?'), {})[opt['type']] = float(value)
    return value

def log_values(self, current_iter, dataset_name, tb_logger):
    with open(os.path.join(OUT, f'means_rank{rank()}.json'), 'w') as f:
        json.dump({k: float(v) for k, v in self.metric_results.items()}, f)
    _log(self, current_iter, dataset_name, tb_logger)

@atexit.register
def dump():
    with open(os.path.join(OUT, f'metrics_rank{rank()}.json'), 'w') as f:
        json.dump(records, f)

PluginModel.save, SRModel.feed_data, SRModel.optimize_parameters = save, feed_data, optimize_parameters
basicsr.metrics.calculate_metric = sr_model.calculate_metric = calculate_metric
SRModel._log_validation_metric_values = log_values
sys.exit(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def write_dump_script(folder) -> str:
    path = osp.join(str(folder), 'dump_ranks.py')
    with open(path, 'w') as f:
        f.write(DUMP_SCRIPT)
    return path


def torchrun(*args: str) -> list[str]:
    return [sys.executable, '-m', 'torch.distributed.run', *args]


def tiny_checkpoint(path: str, num_feat: int = 8, num_block: int = 1, seed: int = 0) -> str:
    """A random tiny ConverseDnCNN state dict (what the test option file loads with param_key_g: ~)."""
    import converse_plugin  # noqa: F401 (registers the archs)
    from basicsr.utils.registry import ARCH_REGISTRY

    torch.manual_seed(seed)
    net = ARCH_REGISTRY.get('ConverseDnCNN')(num_in_ch=1, num_out_ch=1, num_feat=num_feat, num_block=num_block)
    torch.save(net.state_dict(), path)
    return path


def read_json(path: str):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def merged_metrics(folder: str) -> dict:
    """Per image, the metric values of every rank's ``metrics_rank*.json`` (each image must occur once)."""
    merged: dict = {}
    for path in sorted(glob.glob(osp.join(folder, 'metrics_rank*.json'))):
        for img, values in read_json(path).items():
            assert img not in merged, f'{img} evaluated by two ranks'
            merged[img] = values
    return merged


def load_state(path) -> dict:
    return torch.load(str(path), map_location='cpu', weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

