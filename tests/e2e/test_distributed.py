"""Beyond one machine, shown on this one (CPU, gloo, 127.0.0.1): device choice by local rank, SLURM's
environment, distributed testing with the single-process numbers, bounded failures, two torchrun agents
through a c10d rendezvous, and elastic restarts that lose nothing. Every subprocess has a timeout."""
from __future__ import annotations

import datetime
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from os import path as osp

import pytest
import torch

from converse_plugin.engine import dist as cdist
from converse_plugin.engine.distributed_eval import shard_indices
from tests.e2e.dist_helpers import (NAME, OPTION, free_port, load_state, merged_metrics, read_json, same_weights,
                                    tiny_checkpoint, torchrun, write_dump_script)
from tests.e2e.helpers import (OPTIONS, check_ok, cli_env, make_images, run_cli, run_together, tiny_overrides,
                               train_options)

TEST_OPTION = osp.join(OPTIONS, 'test', 'test_ConverseDnCNN_Set12_sigma25.yml')
TEST_NAME = 'test_ConverseDnCNN_Set12_sigma25'


# ---------------------------------------------------------------------------------------------- units
class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))


@pytest.mark.parametrize('local, rank, count, expected', [(1, 2, 2, 1), (3, 3, 2, 1), (1, 6, 4, 1), (0, 5, 4, 0)])
def test_init_dist_sets_the_local_rank_device(monkeypatch, local, rank, count, expected):
    set_device, init = _Recorder(), _Recorder()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
    monkeypatch.setattr(torch.cuda, 'set_device', set_device)
    monkeypatch.setattr(cdist.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(cdist.dist, 'init_process_group', init)
    monkeypatch.setattr(cdist.dist, 'set_timeout', _Recorder(), raising=False)  # missing in torch 2.8, 2.11
    for key, value in {'RANK': rank, 'LOCAL_RANK': local, 'WORLD_SIZE': 8, 'MASTER_ADDR': '10.0.0.1',
                       'MASTER_PORT': 29500}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv(cdist.TIMEOUT_ENV, '7')
    cdist.init_dist('pytorch')
    assert set_device.calls == [((expected, ), {})]  # LOCAL_RANK % count, not RANK % count
    assert init.calls[0][1]['backend'] == 'nccl'
    assert init.calls[0][1]['timeout'].total_seconds() == 7


def test_set_timeout_on_torch_without_it(monkeypatch):
    """torch 2.8 and 2.11 have no dist.set_timeout: the same function under its private name."""
    private = _Recorder()
    monkeypatch.delattr(cdist.dist, 'set_timeout', raising=False)
    monkeypatch.setattr(cdist.dist.distributed_c10d, '_set_pg_timeout', private)
    cdist._set_timeout(datetime.timedelta(seconds=9))
    assert private.calls == [((datetime.timedelta(seconds=9), ), {})]
    public = _Recorder()
    monkeypatch.setattr(cdist.dist, 'set_timeout', public, raising=False)
    cdist._set_timeout(datetime.timedelta(seconds=5))
    assert public.calls == [((datetime.timedelta(seconds=5), ), {})] and len(private.calls) == 1


def test_slurm_environment_without_scontrol(monkeypatch):
    set_device, init = _Recorder(), _Recorder()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4)
    monkeypatch.setattr(torch.cuda, 'set_device', set_device)
    monkeypatch.setattr(cdist.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(cdist.dist, 'init_process_group', init)
    monkeypatch.setattr(cdist.dist, 'set_timeout', _Recorder(), raising=False)  # missing in torch 2.8, 2.11

    def no_scontrol(*args, **kwargs):
        raise FileNotFoundError('scontrol')

    monkeypatch.setattr(cdist.subprocess, 'run', no_scontrol)
    for key in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    for key, value in {'SLURM_PROCID': 5, 'SLURM_NTASKS': 8, 'SLURM_LOCALID': 1,
                       'SLURM_NODELIST': 'gpu[07-08],gpu10'}.items():
        monkeypatch.setenv(key, str(value))
    cdist.init_dist('slurm', port=29611)
    assert (os.environ['MASTER_ADDR'], os.environ['MASTER_PORT']) == ('gpu07', '29611')
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == ('5', '8', '1')
    assert set_device.calls == [((1, ), {})]


def test_shared_store_warning_only_for_several_agents_with_restarts(monkeypatch):
    base = {'TORCHELASTIC_USE_AGENT_STORE': 'True', 'GROUP_WORLD_SIZE': '2', 'TORCHELASTIC_MAX_RESTARTS': '3'}
    for env, warned in ((base, True), ({**base, 'GROUP_WORLD_SIZE': '1'}, False),
                        ({**base, 'TORCHELASTIC_MAX_RESTARTS': '0'}, False),
                        ({**base, 'TORCHELASTIC_USE_AGENT_STORE': 'False'}, False), ({}, False)):
        for key in base:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        message = cdist.shared_store_warning()
        assert (message is not None) == warned, env
        if warned:
            assert 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1' in message and '2 agents' in message


def test_first_host_and_argv_normalisation():
    assert cdist._first_host('127.0.0.1') == '127.0.0.1'
    assert cdist._first_host('node[3-5,7]') == 'node3'
    assert cdist._first_host('a01,a02') == 'a01'
    argv = ['-opt', '/x/a.yml', '--launcher', 'pytorch', '--local_rank=3', '--root', '/r', '--force_yml', 'k=1']
    assert cdist._normalised_argv(argv) == ['--launcher', 'pytorch', '--force_yml', 'k=1']


@pytest.mark.parametrize('n, world', [(12, 2), (5, 2), (3, 4), (1, 3)])
def test_shards_cover_every_image_once(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))


# ---------------------------------------------------------------------------------------------- test
def _test_overrides(data: str, ckpt: str) -> list[str]:
    return ['--force_yml', f'datasets:test_1:dataroot_gt={data}', 'network_g:num_feat=8', 'network_g:num_block=1',
            f'path:pretrain_network_g={ckpt}', 'val:pbar=false', 'num_gpu=0']


def _slurm_ranks(args: list[str], cwd: str, port: int, world: int = 2, timeout: float = 120,
                 extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """``world`` processes started as srun would start them on one node (no scontrol here)."""
    commands = []
    for rank in range(world):
        env = cli_env(SLURM_PROCID=str(rank), SLURM_NTASKS=str(world), SLURM_LOCALID=str(rank),
                      SLURM_NODELIST='127.0.0.1', MASTER_PORT=str(port), **(extra_env or {}))
        for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR'):
            env.pop(key, None)
        commands.append(([sys.executable, *args], env))
    return run_together(commands, cwd, timeout)


@pytest.mark.slow
def test_slurm_test_pipeline_gives_single_process_numbers(tmp_path):
    """Quick (about 15 s): ``--launcher slurm`` with 2 simulated srun tasks; 5 images split 3 + 2; the
    per-image metrics and the means equal the single-process run's, every image is saved once."""
    data = make_images(str(tmp_path / 'images'), n=5, size=40)
    ckpt = tiny_checkpoint(str(tmp_path / 'tiny.pth'))
    script = write_dump_script(tmp_path)
    single, multi = tmp_path / 'single', tmp_path / 'multi'
    single.mkdir()
    multi.mkdir()
    args = ['test', '-opt', TEST_OPTION, *_test_overrides(data, ckpt)]
    check_ok(run_cli([*args, '--root', str(tmp_path / 'root1')], cwd=str(tmp_path), script=script,
                     env={'DUMP_DIR': str(single)}))
    results = _slurm_ranks([script, *args, '--launcher', 'slurm', '--root', str(tmp_path / 'root2')], str(tmp_path),
                           free_port(), extra_env={'DUMP_DIR': str(multi)})
    for r in results:
        check_ok(r)

    reference, split = merged_metrics(str(single)), merged_metrics(str(multi))
    assert len(reference) == 5 and split == reference  # per image, bit for bit
    assert [len(read_json(str(multi / f'metrics_rank{r}.json'))) for r in (0, 1)] == [3, 2]
    assert read_json(str(multi / 'means_rank0.json')) == read_json(str(single / 'means_rank0.json'))
    assert [read_json(str(multi / f'env_rank{r}.json'))['world'] for r in (0, 1)] == [2, 2]
    saved = sorted(os.listdir(tmp_path / 'root2' / 'results' / TEST_NAME / 'visualization' / 'Set12'))
    assert saved == sorted(os.listdir(tmp_path / 'root1' / 'results' / TEST_NAME / 'visualization' / 'Set12'))
    assert len(saved) == 5
    logs = glob.glob(str(tmp_path / 'root2' / 'results' / TEST_NAME / '*.log'))
    assert len(logs) == 1
    log = open(logs[0], encoding='utf-8').read()
    assert log.count('Validation Set12') == 1  # logged once, by rank 0


# ---------------------------------------------------------------------------------------------- failures
def _one_line_error(out: str) -> str:
    lines = [line for line in out.splitlines() if 'error:' in line]
    assert lines, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_port_in_use_and_missing_rank_end_with_one_line_errors(tmp_path):
    """Rank 0 on a port another program holds fails at once; rank 1 whose rank 0 never answers, and
    a lone rank 0 waiting for rank 1, end after the start timeout (3 s here) naming MASTER_ADDR:PORT."""
    data = make_images(str(tmp_path / 'images'), n=1, size=32)
    ckpt = tiny_checkpoint(str(tmp_path / 'tiny.pth'))
    args = ['test', '-opt', TEST_OPTION, *_test_overrides(data, ckpt), '--launcher', 'pytorch']
    base = {'WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1', cdist.TIMEOUT_ENV: '3'}
    with socket.socket() as held:  # a port in use by something else
        held.bind(('127.0.0.1', 0))
        held.listen(1)
        port = held.getsockname()[1]
        start = time.monotonic()
        out = run_cli(args, cwd=str(tmp_path), timeout=60,
                      env={**base, 'RANK': '0', 'LOCAL_RANK': '0', 'MASTER_PORT': str(port)})
        assert out.returncode == 2, out.stdout[-3000:]
        line = _one_line_error(out.stdout)
        assert f'127.0.0.1:{port}' in line and 'already in use' in line, line
    # nobody listens: rank 1 cannot reach rank 0
    port = free_port()
    start = time.monotonic()
    out = run_cli(args, cwd=str(tmp_path), timeout=60, env={**base, 'RANK': '1', 'LOCAL_RANK': '1',
                                                             'MASTER_PORT': str(port)})
    assert out.returncode == 2, out.stdout[-3000:]
    line = _one_line_error(out.stdout)
    assert f'127.0.0.1:{port}' in line and 'rank 1 of 2' in line, line
    # rank 0 alone: rank 1 never comes
    out = run_cli(args, cwd=str(tmp_path), timeout=60, env={**base, 'RANK': '0', 'LOCAL_RANK': '0',
                                                             'MASTER_PORT': str(free_port())})
    assert out.returncode == 2, out.stdout[-3000:]
    line = _one_line_error(out.stdout)
    assert 'within 3 s' in line and 'not every rank joined' in line, line
    assert time.monotonic() - start < 55


@pytest.mark.slow
def test_ranks_with_different_option_files_stop_with_one_error(tmp_path):
    data = make_images(str(tmp_path / 'images'), n=2, size=32)
    ckpt = tiny_checkpoint(str(tmp_path / 'tiny.pth'))
    other = tmp_path / 'other.yml'
    other.write_text(open(TEST_OPTION, encoding='utf-8').read().replace('sigma: 25', 'sigma: 15'))
    port = free_port()
    commands = [([sys.executable, '-m', 'converse_plugin', 'test', '-opt', option, *_test_overrides(data, ckpt),
                  '--launcher', 'pytorch'],
                 cli_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                         MASTER_PORT=str(port), **{cdist.TIMEOUT_ENV: '20'}))
                for rank, option in enumerate((TEST_OPTION, str(other)))]
    results = run_together(commands, str(tmp_path), timeout=90)
    for result in results:
        assert result.returncode == 2, result.stdout[-3000:]
        line = _one_line_error(result.stdout)
        assert 'different options' in line and 'rank(s) 1' in line and 'option file content' in line, line


# ---------------------------------------------------------------------------------------------- training
def _train_overrides(data: str, **extra) -> list[str]:
    return tiny_overrides(**{'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data,
                             'datasets:train:batch_size_per_gpu': 1, **extra})


@pytest.mark.slow
def test_two_torchrun_agents_c10d_rendezvous_four_ranks(tmp_path):
    """Two agents (2 'nodes' x 2 processes) meet through a c10d rendezvous; all four ranks end with the
    same weights; each process reports its LOCAL_RANK; one log, one set of checkpoints."""
    data = make_images(str(tmp_path / 'images'), n=8, size=48)
    script = write_dump_script(tmp_path)
    dump = tmp_path / 'dump'
    dump.mkdir()
    port = free_port()
    agent = torchrun('--nnodes', '2', '--nproc_per_node', '2', '--rdzv-backend', 'c10d',
                     '--rdzv-endpoint', f'127.0.0.1:{port}', '--rdzv-id', 'converse-test', '--max-restarts', '0')
    cmd = [*agent, script, 'train', '-opt', train_options(OPTION), '--launcher', 'pytorch', '--root',
           str(tmp_path / 'root'), '--force_yml', *_train_overrides(data)]
    env = cli_env(DUMP_DIR=str(dump))
    for agent_run in run_together([(cmd, env), (cmd, env)], str(tmp_path), timeout=240):
        assert agent_run.returncode == 0, agent_run.stdout[-4000:]

    final = [load_state(dump / f'final_rank{r}.pth') for r in range(4)]
    assert all(same_weights(final[0], f) for f in final[1:])
    envs = [read_json(str(dump / f'env_rank{r}.json')) for r in range(4)]
    assert sorted(e['RANK'] for e in envs) == ['0', '1', '2', '3']
    assert sorted(e['LOCAL_RANK'] for e in envs) == ['0', '0', '1', '1']
    assert all(e['world'] == 4 and e['device'] == 'cpu' for e in envs)

    exp = tmp_path / 'root' / 'experiments' / NAME
    assert len(glob.glob(str(exp / 'train_*.log'))) == 1
    log = open(glob.glob(str(exp / 'train_*.log'))[0], encoding='utf-8').read()
    assert 'World size (gpu number): 4' in log and log.count('Validation Set12') == 3  # iters 2, 4, end
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']
    assert not glob.glob(str(tmp_path / 'root' / 'experiments' / '*archived*'))
    assert same_weights(load_state(exp / 'models' / 'net_g_latest.pth')['params'], final[0])


def _elastic_run(tmp_path, tag: str, data: str, kill_at: str | None = None, slow_save: str | None = None,
                 timeout: float = 300) -> tuple[str, dict, str]:
    """torchrun --max-restarts 1 --auto_resume, 2 processes; returns (output, final rank-0 weights, root).
    ``kill_at`` 'R:I' SIGKILLs rank R at iteration I (first attempt); ``slow_save`` NAME pauses the save of
    that file half-written and the test SIGKILLs the saving worker then."""
    script = write_dump_script(tmp_path)
    dump = tmp_path / f'dump_{tag}'
    dump.mkdir()
    root = tmp_path / f'root_{tag}'
    env = cli_env(DUMP_DIR=str(dump))
    if kill_at:
        env['KILL_AT_ITER'] = kill_at
    if slow_save:
        env['CONVERSE_TEST_SLOW_SAVE'] = slow_save
    cmd = [*torchrun('--nnodes', '1', '--nproc_per_node', '2', '--rdzv-backend', 'c10d', '--rdzv-endpoint',
                     f'127.0.0.1:{free_port()}', '--rdzv-id', tag, '--max-restarts', '1'),
           script, 'train', '-opt', train_options(OPTION), '--launcher', 'pytorch', '--auto_resume', '--root',
           str(root), '--force_yml', *_train_overrides(data, **{'train:total_iter': 8, 'val:val_freq': 100})]
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    killed: list[int] = []

    def read():
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r'half-written .*\.(\d+)\.tmp', line)
            if found and not killed:
                killed.append(int(found.group(1)))
                os.kill(int(found.group(1)), signal.SIGKILL)  # the saving worker, in the middle of the save

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
        reader.join(10)
    out = ''.join(lines)
    assert proc.returncode == 0, out[-5000:]
    if slow_save:
        assert killed, out[-3000:]
    return out, load_state(dump / 'final_rank0.pth'), str(root)


@pytest.mark.slow
def test_elastic_restart_after_sigkill_in_training_loses_nothing(tmp_path):
    """Rank 1 SIGKILLed at iteration 5 (torchrun --max-restarts 1 --auto_resume): the group restarts,
    resumes from the last complete state (iteration 4) and ends with exactly the weights of an
    uninterrupted run."""
    data = make_images(str(tmp_path / 'images'), n=6, size=48)
    _, reference, _ = _elastic_run(tmp_path, 'plain', data)
    out, final, root = _elastic_run(tmp_path, 'kill', data, kill_at='1:5')
    exp = osp.join(root, 'experiments', NAME)
    logs = sorted(glob.glob(osp.join(exp, 'train_*.log')))
    assert len(logs) == 2, logs  # the first attempt's and the restarted one's
    assert 'Resuming training from epoch: 1, iter: 4.' in open(logs[-1], encoding='utf-8').read()
    assert same_weights(final, reference)


@pytest.mark.slow
def test_elastic_restart_after_sigkill_in_a_save_loses_nothing(tmp_path):
    """Rank 0 SIGKILLed while net_g_4.pth is half-written: the restarted group resumes from iteration 2 (the
    last complete state) and ends with exactly the weights of an uninterrupted run."""
    data = make_images(str(tmp_path / 'images'), n=6, size=48)
    _, reference, _ = _elastic_run(tmp_path, 'plain', data)
    out, final, root = _elastic_run(tmp_path, 'save', data, slow_save='net_g_4.pth')
    exp = osp.join(root, 'experiments', NAME)
    logs = sorted(glob.glob(osp.join(exp, 'train_*.log')))
    assert 'Resuming training from epoch: 0, iter: 2.' in open(logs[-1], encoding='utf-8').read(), out[-3000:]
    assert sorted(os.listdir(osp.join(exp, 'training_states'))) == ['2.state', '4.state', '6.state', '8.state']
    assert same_weights(final, reference)
