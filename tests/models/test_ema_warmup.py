"""``train: ema_warmup``: the EMA decay ramps up, so that validations on the EMA weights are meaningful from
the first one, for the plugin's ConverseModel and for BasicSR's SRModel run by the plugin's engine."""
from __future__ import annotations

import copy

import pytest
import torch

import converse_plugin  # noqa: F401
from basicsr.models.sr_model import SRModel
from converse_plugin.errors import OptionError
from converse_plugin.models import ConverseModel, plugin_model_class
from converse_plugin.models.base_model import ema_decay_at
from tests.models.test_amp import denoising_batch, make_opt


def test_decay_schedule():
    assert ema_decay_at(0.999, 1, warmup=False) == 0.999
    assert ema_decay_at(0.999, 1, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 80, warmup=True) == pytest.approx(0.9)
    assert ema_decay_at(0.999, 300, warmup=True) == pytest.approx(301 / 310)
    assert ema_decay_at(0.999, 10_000, warmup=True) == 0.999
    steps = [ema_decay_at(0.999, t, True) for t in range(1, 20_000, 97)]
    assert steps == sorted(steps)  # never decreasing


def _distances(cls, warmup: bool, iters: int = 60) -> tuple[float, float]:
    """(|ema - net|, |ema - init|) after ``iters`` training iterations, relative to |net - init|."""
    torch.manual_seed(0)
    opt = make_opt('/nonexistent')
    opt['train'].update(ema_decay=0.999, ema_warmup=warmup)
    model = cls(copy.deepcopy(opt))
    init = [p.detach().clone() for p in model.net_g.parameters()]
    for it in range(iters):
        model.feed_data(denoising_batch(it % 4))
        model.optimize_parameters(it + 1)
    net, ema = list(model.net_g.parameters()), list(model.net_g_ema.parameters())
    moved = sum((n - i).norm() ** 2 for n, i in zip(net, init)) ** 0.5
    to_net = sum((e - n).norm() ** 2 for e, n in zip(ema, net)) ** 0.5
    to_init = sum((e - i).norm() ** 2 for e, i in zip(ema, init)) ** 0.5
    return float(to_net / moved), float(to_init / moved)


@pytest.mark.parametrize('cls', [ConverseModel, plugin_model_class(SRModel)], ids=['ConverseModel', 'SRModel'])
def test_warmup_makes_the_ema_follow_the_network(cls):
    off_to_net, off_to_init = _distances(cls, warmup=False)
    on_to_net, on_to_init = _distances(cls, warmup=True)
    assert off_to_init < 0.1 and off_to_net > 0.9  # without warm-up: still (almost) the initialisation
    assert on_to_net < 0.25 and on_to_init > 0.75  # with it: close to the trained network


def test_bad_value_is_an_option_error():
    opt = make_opt('/nonexistent')
    opt['train'].update(ema_decay=0.999, ema_warmup='yes')
    with pytest.raises(OptionError, match='train:ema_warmup: expected true or false'):
        ConverseModel(opt)
