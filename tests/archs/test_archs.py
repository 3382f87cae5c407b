"""Architectures: registry, constructor arguments honoured, shapes, ablation operators, checkpoints."""
from __future__ import annotations

import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from converse_plugin.archs import ConverseBlock, LayerNorm2d
from converse_plugin.ops import Converse2D
from tests.conftest import require_shared

NAMES = ('Converse2D', 'ConverseBlock', 'ConverseDnCNN', 'ConverseMSRResNet', 'ConverseNet', 'ConverseUSRNet',
         'DnCNN')

# name -> (checkpoint, parameter count of the released file)
RELEASED = {
    'ConverseDnCNN': ('converse_dncnn.pth', 796_353),
    'ConverseMSRResNet': ('converse_srresnet.pth', 699_072),
    'ConverseNet': ('conversenet.pth', 243_267),
    'ConverseUSRNet': ('converse_usrnet.pth', 307_987),
    # RESULTS.md lists 557,057 for DnCNN: that counts the 15 batch norms' affine parameters
    # (15 x 128 = 1,920) which the released file has merged into the convolutions.
    'DnCNN': ('kair_dncnn_sigma25.pth', 555_137),
}


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize('name', NAMES)
def test_registered(name):
    assert name in ARCH_REGISTRY


def test_build_network_builds_each():
    assert isinstance(build_network({'type': 'Converse2D', 'in_channels': 4, 'out_channels': 4,
                                     'kernel_size': 3}), Converse2D)
    assert isinstance(build_network({'type': 'ConverseBlock', 'in_channels': 8}), ConverseBlock)
    for name in RELEASED:
        build_network({'type': name})


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_released_checkpoint_loads_strictly(name):
    path = require_shared('zoo', RELEASED[name][0])
    net = build_network({'type': name})
    net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True), strict=True)
    assert n_params(net) == RELEASED[name][1]


def test_default_param_counts_without_checkpoints():
    for name, (_, count) in RELEASED.items():
        assert n_params(build_network({'type': name})) == count


def test_layernorm2d_matches_definition():
    ln = LayerNorm2d(5)
    with torch.no_grad():
        ln.weight.uniform_()
        ln.bias.uniform_()
    x = torch.randn(2, 5, 4, 3)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (5, ), ln.weight, ln.bias, 1e-5).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)
    with torch.no_grad():  # the in-place inference path
        x0 = x.clone()
        assert torch.allclose(ln(x), ref, atol=1e-5)
        assert torch.equal(x, x0)


@pytest.mark.parametrize('gated', (False, True))
def test_block_inference_path_equals_autograd_path(gated):
    torch.manual_seed(0)
    block = ConverseBlock(6, kernel_size=3, padding=2, padding_mode='replicate', gated=gated).double()
    with torch.no_grad():
        for p in block.parameters():  # gates away from zero, so both branches count
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(2, 6, 9, 8, dtype=torch.float64)
    x0 = x.clone()
    with_grad = block(x)
    assert with_grad.requires_grad
    with torch.no_grad():
        without = block(x)
    assert torch.equal(x, x0)  # the in-place GELUs and sums never touch the block's input
    assert torch.allclose(without, with_grad, rtol=0, atol=1e-12)
    assert (without - x).abs().max() > 1e-3  # the block does something


def test_converse_block_keys_and_gates():
    block = ConverseBlock(8, kernel_size=3, padding=2)
    keys = set(block.state_dict())
    assert {'conv1.0.weight', 'conv1.1.weight', 'conv1.3.weight', 'conv1.3.bias', 'conv1.5.weight', 'conv2.0.bias',
            'conv2.1.weight', 'conv2.3.weight'} <= keys
    gated = ConverseBlock(8, kernel_size=3, padding=2, gated=True)
    assert {'alpha1', 'alpha2'} <= set(gated.state_dict())
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(gated(x), x)  # gates start at zero: identity at init


@pytest.mark.parametrize('operator', ('converse', 'conv', 'convt'))
@pytest.mark.parametrize('k', (2, 3, 5))
def test_block_operator_choice(operator, k):
    block = ConverseBlock(4, kernel_size=k, padding=k - 1, operator=operator)
    x = torch.randn(2, 4, 9, 7)
    assert block(x).shape == x.shape
    reference = ConverseBlock(4, kernel_size=k, padding=k - 1)
    assert n_params(block) == n_params(reference)  # the ablations compare like with like


@pytest.mark.parametrize('operator', ('converse', 'conv', 'convt'))
@pytest.mark.parametrize('upscale', (2, 3, 4, 8))
def test_msrresnet_upscales(upscale, operator):
    net = build_network({'type': 'ConverseMSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': upscale,
                         'operator': operator})
    x = torch.rand(1, 3, 6, 5)
    assert net(x).shape == (1, 3, 6 * upscale, 5 * upscale)
    n_up = {2: 1, 3: 1, 4: 2, 8: 3}[upscale]
    assert sum(1 for n, _ in net.named_children() if n.startswith('up') and not n.startswith('upconv')) == n_up


def test_msrresnet_x4_is_the_released_layout():
    net = build_network({'type': 'ConverseMSRResNet'})
    assert net.up1.scale == 2 and net.up2.scale == 2 and net.up1.padding_mode == 'replicate'
    assert net.up1.eps == 1e-3 and net.conv_last.bias is None


def test_constructor_arguments_are_honoured():
    net = build_network({'type': 'ConverseDnCNN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 3,
                         'kernel_size': 5, 'padding': 4, 'padding_mode': 'reflect', 'eps': 1e-4})
    assert len(net.m_body) == 3 and net.m_head[0].in_channels == 3 and net.m_tail[0].out_channels == 3
    op = net.m_body[0].conv1[3]
    assert (op.kernel_size, op.padding, op.padding_mode, op.eps) == (5, 4, 'reflect', 1e-4)
    assert net(torch.rand(2, 3, 12, 12)).shape == (2, 3, 12, 12)
    cnet = build_network({'type': 'ConverseNet', 'num_feat': 8, 'num_block': 2, 'num_iter': 3, 'kernel_size': 5,
                          'padding': 3, 'padding_mode': 'replicate'})
    assert len(cnet.p.m_body) == 2 and cnet.num_iter == 3
    assert cnet.p.m_body[0].conv1[3].padding_mode == 'replicate'
    calls = []
    cnet.p.register_forward_hook(lambda *a: calls.append(1))
    cnet(torch.rand(1, 3, 8, 8))
    assert len(calls) == 3


def test_usrnet_batch_of_kernels_and_sf():
    net = build_network({'type': 'ConverseUSRNet', 'num_feat': 8, 'num_block': 1, 'num_iter': 2, 'kernel_size': 5})
    with torch.no_grad():
        for block in net.p.m_body:
            block.alpha1.fill_(0.5)
            block.alpha2.fill_(0.5)
    x = torch.rand(2, 3, 10, 10)
    kernels = torch.rand(2, 1, 5, 5)
    both = net(x, kernels)
    assert both.shape == (2, 3, 10, 10)
    for i in range(2):
        assert torch.allclose(both[i:i + 1], net(x[i:i + 1], kernels[i:i + 1]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(both[0:1], net(x[0:1], kernels[1:2]), atol=1e-4)  # the kernel matters
    assert net(x, kernels[:, 0], sf=2).shape == (2, 3, 20, 20)
    with pytest.raises(ValueError, match=r'kernels of shape \(B, 1, 5, 5\)'):
        net(x, torch.rand(2, 1, 7, 7))


def test_dncnn_is_residual():
    net = build_network({'type': 'DnCNN', 'num_feat': 8, 'num_conv': 3})
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(net(x), x)
