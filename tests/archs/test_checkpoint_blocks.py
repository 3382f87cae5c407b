"""checkpoint_blocks (constructor argument = YAML key): blocks recomputed in the backward pass, identical
outputs and gradients, and the blocks' activations are not kept."""
from __future__ import annotations

import pytest
import torch
from basicsr.archs import build_network

import converse_plugin  # noqa: F401  (registers the architectures)

SMALL = {
    'ConverseDnCNN': ({'num_feat': 8, 'num_block': 3}, 1, False),
    'ConverseMSRResNet': ({'num_feat': 8, 'num_block': 2, 'upscale': 2}, 3, False),
    'ConverseNet': ({'num_feat': 8, 'num_block': 2, 'num_iter': 2}, 3, False),
    'ConverseUSRNet': ({'num_feat': 8, 'num_block': 2, 'num_iter': 2, 'kernel_feat': 4, 'kernel_hidden': 8}, 3,
                       True),
}


def run(name: str, checkpoint_blocks: bool):
    opts, ch, kernels = SMALL[name]
    torch.manual_seed(0)
    net = build_network(dict(opts, type=name, checkpoint_blocks=checkpoint_blocks))
    g = torch.Generator().manual_seed(1)
    args = [torch.rand(2, ch, 12, 14, generator=g)]
    if kernels:
        k = torch.rand(2, 1, 7, 7, generator=g)
        args.append(k / k.sum(dim=(-2, -1), keepdim=True))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = net(*args)
    grads = torch.autograd.grad(out.square().mean(), list(net.parameters()))
    return out.detach(), grads, sum(saved)


@pytest.mark.parametrize('name', list(SMALL))
def test_checkpoint_blocks_same_outputs_and_gradients_less_saved(name):
    out, grads, saved = run(name, False)
    out_c, grads_c, saved_c = run(name, True)
    assert torch.equal(out_c, out)
    for g, gc in zip(grads, grads_c):
        torch.testing.assert_close(gc, g, rtol=0, atol=1e-6)
    assert saved_c < 0.5 * saved  # only block inputs (and what lies outside the blocks) are kept


def test_checkpoint_blocks_off_by_default_and_inactive_without_grad():
    net = build_network({'type': 'ConverseDnCNN', 'num_feat': 4, 'num_block': 1})
    assert net.checkpoint_blocks is False
    net = build_network({'type': 'ConverseDnCNN', 'num_feat': 4, 'num_block': 1, 'checkpoint_blocks': True})
    with torch.no_grad():
        assert net(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
