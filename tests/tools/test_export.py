"""Export: the real-arithmetic Converse2D equals the reference; every architecture exports to ONNX with
dynamic height/width and onnxruntime matches PyTorch within 1e-4; safetensors round trips; clear errors."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import converse_plugin  # noqa: F401
from converse_plugin.archs import ConverseDnCNN, ConverseMSRResNet, ConverseNet, ConverseUSRNet, DnCNN
from converse_plugin.ops import Converse2D, converse2d
from converse_plugin.cli import export
from converse_plugin.io.checkpoint import load_state_dict_file, read_safetensors_metadata, save_state_dict_file
from converse_plugin.ops.export import converse2d_real, export_mode
from converse_plugin.io.model_files import LoadedModel

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')


@pytest.mark.parametrize('scale,padding,mode', [(1, 2, 'circular'), (1, 0, 'zeros'), (2, 2, 'replicate'),
                                                (3, 1, 'reflect'), (4, 2, 'circular')])
def test_real_formulation_equals_reference(scale, padding, mode):
    g = torch.Generator().manual_seed(scale)
    x = torch.rand(2, 3, 11, 14, generator=g)
    weight = torch.softmax(torch.randn(1, 3, 25, generator=g), -1).view(1, 3, 5, 5)
    lam = torch.rand(1, 3, 1, 1, generator=g) * 0.05 + 1e-3
    ref = converse2d(x.double(), weight.double(), lam.double(), scale, padding, mode).float()
    torch.testing.assert_close(converse2d_real(x, weight, lam, scale, padding, mode), ref, rtol=0, atol=2e-5)


def test_export_mode_selects_and_restores():
    layer = Converse2D(4, 4, 3, scale=2).eval()
    other = Converse2D(4, 4, 3, scale=2).eval()
    x = torch.rand(1, 4, 9, 12)
    original = Converse2D.forward
    with torch.no_grad():
        ref = layer(x)
        with export_mode(layer, torch.float64):
            assert Converse2D.forward is original  # no class patching
            assert (layer.impl, layer.compute_dtype) == ('real', torch.float64)
            assert other.impl is None  # only the given model
            out = layer(x)
        assert (layer.impl, layer.compute_dtype) == (None, None)
        with export_mode(torch.float64):  # no model: every layer that does not name a formulation
            out_all = other(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_all, other(x), rtol=0, atol=1e-5)


def test_export_mode_restores_on_error():
    layer = Converse2D(4, 4, 3)
    with pytest.raises(RuntimeError, match='boom'):
        with export_mode(layer):
            raise RuntimeError('boom')
    assert layer.impl is None and layer.compute_dtype is None


SMALL = {
    'DnCNN': (DnCNN, {'num_feat': 4, 'num_conv': 3}),
    'ConverseDnCNN': (ConverseDnCNN, {'num_feat': 4, 'num_block': 1}),
    'ConverseMSRResNet': (ConverseMSRResNet, {'num_feat': 4, 'num_block': 1, 'upscale': 2}),
    'ConverseNet': (ConverseNet, {'num_feat': 4, 'num_block': 1, 'num_iter': 1}),
    'ConverseUSRNet': (ConverseUSRNet, {'num_feat': 4, 'num_block': 1, 'num_iter': 1, 'kernel_feat': 4,
                                        'kernel_hidden': 8}),
}


@pytest.mark.parametrize('arch', list(SMALL))
def test_onnx_export_matches_pytorch(arch, tmp_path):
    cls, kwargs = SMALL[arch]
    torch.manual_seed(0)
    loaded = LoadedModel(cls(**kwargs).eval(), arch, kwargs, '', arch)
    path = str(tmp_path / f'{arch}.onnx')
    export.export_onnx(loaded, path, trace_size=24)
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == (['input', 'kernel'] if arch == 'ConverseUSRNet' else ['input'])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param and dims[3].dim_param  # height and width are dynamic
    if arch.startswith('Converse'):
        assert any(n.op_type == 'DFT' for n in model.graph.node)  # the FFTs are in the graph
    diff = export.check_onnx(loaded, path, [(20, 29), (31, 17)])
    assert diff <= 1e-4, f'{arch}: onnxruntime differs from PyTorch by {diff}'


class _FunctionalNet(nn.Module):
    """Calls the functional operator directly with the default formulation (the custom operator)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, 1, 3, 3), 1 / 9))

    def forward(self, x):
        return converse2d(x, self.weight, torch.full((1, 1, 1, 1), 0.01))


def test_functional_operator_called_directly_exports(tmp_path):
    """Outside export_mode the custom operator ``converse::apply_filter`` reaches the exporter, which
    decomposes it through its implementation: the graph still has DFT nodes and matches PyTorch."""
    loaded = LoadedModel(_FunctionalNet().eval(), 'FunctionalNet', {'num_in_ch': 1, 'num_out_ch': 1}, '', 'c')
    path = str(tmp_path / 'c.onnx')
    export.export_onnx(loaded, path, trace_size=24)
    assert any(n.op_type == 'DFT' for n in onnx.load(path).graph.node)
    assert export.check_onnx(loaded, path, [(20, 29)]) <= 1e-4


def test_safetensors_round_trip_and_cli(tmp_path, capsys):
    torch.manual_seed(0)
    kwargs = {'num_feat': 4, 'num_block': 1}
    net = ConverseDnCNN(**kwargs)
    pth = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, pth)  # BasicSR layout
    out = tmp_path / 'net.safetensors'
    assert export.main(['--model', str(pth), '--arch', 'ConverseDnCNN', '--arch-kwargs', json.dumps(kwargs),
                        '--format', 'safetensors', '-o', str(out)]) == 0
    loaded = load_state_dict_file(out)
    assert loaded.keys() == net.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    meta = read_safetensors_metadata(out)
    assert meta['arch'] == 'ConverseDnCNN' and json.loads(meta['arch_kwargs']) == kwargs
    # and back to .pth through the same function
    save_state_dict_file(loaded, tmp_path / 'back.pth')
    back = torch.load(tmp_path / 'back.pth', weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())
    assert export.main(['--model', str(pth), '--arch', 'ConverseDnCNN', '--format', 'safetensors',
                        '-o', str(tmp_path / 'x.bin')]) == 2
    assert 'must end in .safetensors' in capsys.readouterr().err


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"oops": tru')
    with pytest.raises(ValueError, match='bad.safetensors is not a valid safetensors file'):
        load_state_dict_file(bad)
