"""ConverseDeblurModel: the kernel reaches networks that take one (training, test, EMA, DDP), with
``sf`` from ``opt['scale']``; other networks are called exactly as SRModel calls them."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

import converse_plugin  # noqa: F401  (registers the archs and the model)
from basicsr.models import build_model  # noqa: E402  isort: skip
from converse_plugin.engine.dist import init_dist  # noqa: E402  isort: skip
from converse_plugin.models import ConverseDeblurModel  # noqa: E402  isort: skip

USRNET = {'type': 'ConverseUSRNet', 'num_feat': 8, 'num_block': 1, 'num_iter': 2}
CONVERSENET = {'type': 'ConverseNet', 'num_feat': 8, 'num_block': 1, 'num_iter': 1}


def make_opt(network: dict, is_train: bool = True, ema: float = 0.999, scale: int | None = None,
             dist_: bool = False) -> dict:
    opt = {
        'name': 't', 'model_type': 'ConverseDeblurModel', 'num_gpu': 0, 'is_train': is_train, 'dist': dist_,
        'rank': 0, 'world_size': 1, 'network_g': dict(network), 'path': {'pretrain_network_g': None},
        'train': {'ema_decay': ema, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    }
    if scale is not None:
        opt['scale'] = scale
    return opt


def batch(scale: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(2, 1, 7, 7, generator=g)
    return {'lq': torch.rand(2, 3, 16, 16, generator=g), 'gt': torch.rand(2, 3, 16 * scale, 16 * scale, generator=g),
            'kernel': k / k.sum(dim=(-2, -1), keepdim=True)}


def test_registered_and_built_from_options():
    model = build_model(make_opt(USRNET))
    assert isinstance(model, ConverseDeblurModel)


def test_training_step_and_test_pass_the_kernel():
    model = ConverseDeblurModel(make_opt(USRNET))
    data = batch()
    model.feed_data(data)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.optimize_parameters(1)
    assert model.log_dict['l_pix'] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())
    kernelnet_grad = model.net_g.kernelnet.fc1.weight.grad
    assert kernelnet_grad is not None and kernelnet_grad.abs().sum() > 0  # the kernel was used

    model.test()  # with net_g_ema
    with torch.no_grad():
        expected = model.net_g_ema(data['lq'], kernel=data['kernel'], sf=1)
    torch.testing.assert_close(model.output, expected, rtol=0, atol=0)
    other = dict(data, kernel=torch.roll(data['kernel'], 2, dims=-1))
    model.feed_data(other)
    model.test()
    assert not torch.allclose(model.output, expected)  # a different kernel, a different output


def test_test_without_ema_and_explicit_kernel_wins():
    model = ConverseDeblurModel(make_opt(USRNET, is_train=False))
    data = batch()
    model.feed_data(data)
    model.test()
    with torch.no_grad():
        torch.testing.assert_close(model.output, model.net_g(data['lq'], kernel=data['kernel']), rtol=0, atol=0)
        # a caller that passes the kernel itself is not overridden
        own = torch.roll(data['kernel'], 1, dims=-2)
        torch.testing.assert_close(model.net_g(data['lq'], own), model.net_g(data['lq'], kernel=own), rtol=0, atol=0)


def test_scale_is_passed_as_sf():
    model = ConverseDeblurModel(make_opt(USRNET, is_train=False, scale=2))
    model.feed_data(batch(scale=2))
    model.test()
    assert model.output.shape == (2, 3, 32, 32)


def test_missing_kernel_is_a_clear_error():
    model = ConverseDeblurModel(make_opt(USRNET, is_train=False))
    data = batch()
    del data['kernel']
    model.feed_data(data)
    with pytest.raises(ValueError, match="ConverseUSRNet needs a blur kernel.*'kernel'"):
        model.test()


def test_blind_network_is_called_like_srmodel():
    model = ConverseDeblurModel(make_opt(CONVERSENET))
    data = batch()
    model.feed_data(data)  # the kernel is there, and must be ignored
    model.optimize_parameters(1)
    model.test()
    with torch.no_grad():
        torch.testing.assert_close(model.output, model.net_g_ema(data['lq']), rtol=0, atol=0)
    assert not model.net_g._forward_pre_hooks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) code path')
def test_under_distributed_data_parallel(monkeypatch):
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    init_dist('pytorch')
    try:
        model = ConverseDeblurModel(make_opt(USRNET, ema=0, dist_=True))
        assert isinstance(model.net_g, torch.nn.parallel.DistributedDataParallel)
        data = batch()
        model.feed_data(data)
        model.optimize_parameters(1)
        model.test()
        bare = model.get_bare_model(model.net_g)
        with torch.no_grad():
            torch.testing.assert_close(model.output, bare(data['lq'], kernel=data['kernel']), rtol=0, atol=0)
    finally:
        dist.destroy_process_group()


def test_same_as_srmodel_for_a_plain_network():
    """Same seed, same data: ConverseDeblurModel and SRModel train a kernel-free network identically."""
    from basicsr.models.sr_model import SRModel
    outputs = []
    for cls in (SRModel, ConverseDeblurModel):
        torch.manual_seed(0)
        model = cls(make_opt(CONVERSENET))
        for i in range(2):
            model.feed_data(batch(seed=i))
            model.optimize_parameters(i + 1)
        model.test()
        outputs.append(model.output)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
