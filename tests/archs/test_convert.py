"""convert_to_converse / ConverseConverted: rules, shapes, parameter counts, key-preserving fine-tuning,
errors, docstring examples and the README snippets."""
from __future__ import annotations

import doctest
import logging
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rcan_arch import RCAN
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.archs.swinir_arch import SwinIR
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

import converse_plugin
from converse_plugin import ConverseBlock, ConverseUpsampler, convert_to_converse
from converse_plugin.archs import convert as convert_module
from converse_plugin.archs import converse_block, converse_upsampler
from converse_plugin.ops import Converse2D, converse2d

ROOT = Path(__file__).resolve().parents[2]


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def tiny_swinir(upsampler: str, upscale: int) -> SwinIR:
    return SwinIR(upscale=upscale, img_size=8, window_size=4, embed_dim=12, depths=[1], num_heads=[2], mlp_ratio=2,
                  upsampler=upsampler)


# --------------------------------------------------------------------------------- ConverseUp-MSRResNet


class ConverseUpMSRResNet(nn.Module):
    """The authors' variant, written out: MSRResNet whose x2 stages are conv3x3 64->64 then
    Converse2D(64, k=2, s=2, p=2, 'replicate', eps=1e-3) then LeakyReLU(0.1)."""

    def __init__(self, num_feat: int = 64, num_block: int = 16) -> None:
        super().__init__()
        ref = MSRResNet(num_feat=num_feat, num_block=num_block, upscale=4)
        self.conv_first, self.body, self.conv_hr, self.conv_last = ref.conv_first, ref.body, ref.conv_hr, ref.conv_last
        self.up_convs = nn.ModuleList(nn.Conv2d(num_feat, num_feat, 3, 1, 1) for _ in range(2))
        self.ups = nn.ModuleList(Converse2D(num_feat, num_feat, 2, 2, 2, 'replicate', 1e-3) for _ in range(2))

    def forward(self, x):
        out = self.body(F.leaky_relu(self.conv_first(x), 0.1))
        for conv, up in zip(self.up_convs, self.ups):
            out = F.leaky_relu(up(conv(out)), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        return out + F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)


def test_msrresnet_x4_equals_converse_up_msrresnet():
    torch.manual_seed(0)
    net, report = convert_to_converse(MSRResNet(upscale=4))
    assert n_params(MSRResNet(upscale=4)) == 1_517_571
    assert n_params(net) == 1_296_643 == report.params_after
    assert report.params_before == 1_517_571
    assert [(r.path, r.rule) for r in report.replacements] == [
        ('upconv1', 'upsample'), ('upconv2', 'upsample'), ('pixel_shuffle', 'pixel_shuffle')]
    assert isinstance(net.pixel_shuffle, nn.Identity)
    for stage in (net.upconv1, net.upconv2):
        assert isinstance(stage, ConverseUpsampler) and stage.unshuffle == 1
        assert (stage.conv.in_channels, stage.conv.out_channels, stage.conv.kernel_size) == (64, 64, (3, 3))
        up = stage.up
        assert (up.in_channels, up.kernel_size, up.scale, up.padding, up.padding_mode, up.eps) == (
            64, 2, 2, 2, 'replicate', 1e-3)

    # same structure: the converted weights, renamed, make the reference give the same output
    reference = ConverseUpMSRResNet()
    rename = {'upconv1.conv.': 'up_convs.0.', 'upconv2.conv.': 'up_convs.1.', 'upconv1.up.': 'ups.0.',
              'upconv2.up.': 'ups.1.'}
    state = {}
    for key, value in net.state_dict().items():
        for old, new in rename.items():
            key = key.replace(old, new) if key.startswith(old) else key
        state[key] = value
    reference.load_state_dict(state, strict=True)  # every key matched, every shape equal
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), reference.eval()(x), rtol=0, atol=0)


# --------------------------------------------------------------------------------- the four architectures

ARCHS = {
    'MSRResNet_x2': (lambda: MSRResNet(num_feat=16, num_block=1, upscale=2), 2, 1),
    'MSRResNet_x3': (lambda: MSRResNet(num_feat=16, num_block=1, upscale=3), 3, 1),
    'MSRResNet_x4': (lambda: MSRResNet(num_feat=16, num_block=1, upscale=4), 4, 2),
    'EDSR_x2': (lambda: EDSR(3, 3, num_feat=16, num_block=2, upscale=2), 2, 1),
    'RCAN_x4': (lambda: RCAN(3, 3, num_feat=16, num_group=2, num_block=2, squeeze_factor=4, upscale=4), 4, 2),
    'SwinIR_x2_pixelshuffle': (lambda: tiny_swinir('pixelshuffle', 2), 2, 1),
    'SwinIR_x4_pixelshuffledirect': (lambda: tiny_swinir('pixelshuffledirect', 4), 4, 1),
}


@pytest.mark.parametrize('name', sorted(ARCHS))
def test_converted_architectures_keep_their_shapes(name):
    make, scale, stages = ARCHS[name]
    torch.manual_seed(0)
    original = make()
    net, report = convert_to_converse(original)
    assert original is not net  # not inplace by default
    assert sum(isinstance(m, ConverseUpsampler) for m in net.modules()) == stages
    assert not any(isinstance(m, nn.PixelShuffle) for m in net.modules())
    assert any(isinstance(m, nn.PixelShuffle) for m in original.modules())  # the original is untouched
    assert [m.up.scale for m in net.modules() if isinstance(m, ConverseUpsampler)] == (
        [2] * stages if stages > 1 else [scale])
    assert report.params_after == n_params(net) < report.params_before == n_params(original)
    assert sum(r.params_after - r.params_before for r in report.replacements) == (
        report.params_after - report.params_before)
    x = torch.rand(2, 3, 8, 12)
    with torch.no_grad():
        assert net.eval()(x).shape == original.eval()(x).shape == (2, 3, 8 * scale, 12 * scale)
    # training works: every new parameter gets a gradient
    net.train()
    net(x).mean().backward()
    assert all(p.grad is not None for m in net.modules() if isinstance(m, ConverseUpsampler) for p in m.parameters())


def test_unchanged_layers_keep_weights_and_paths():
    original = MSRResNet(num_feat=16, num_block=2, upscale=4)
    net, report = convert_to_converse(original)
    before, after = original.state_dict(), net.state_dict()
    assert report.removed_keys == ['upconv1.weight', 'upconv1.bias', 'upconv2.weight', 'upconv2.bias']
    assert set(after) - set(before) == set(report.added_keys)
    common = set(before) & set(after)
    assert common == set(before) - set(report.removed_keys)
    assert all(torch.equal(before[k], after[k]) for k in common)


def test_yaml_type_loads_an_original_checkpoint_bit_for_bit(tmp_path):
    """BasicSR's load_network (strict_load_g: false) into ConverseConverted: every unchanged weight equal."""
    torch.manual_seed(1)
    original = MSRResNet(num_feat=64, num_block=16, upscale=4)
    path = tmp_path / 'msrresnet_x4.pth'
    torch.save({'params': original.state_dict()}, path)
    torch.manual_seed(2)  # a different initialisation than the checkpoint's
    net = build_network({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet', 'upscale': 4},
                         'convert': {'upsample': True}})
    assert n_params(net) == 1_296_643
    ckpt, current = original.state_dict(), net.state_dict()
    shared = [k for k in ckpt if k in current]
    assert shared and not all(torch.equal(ckpt[k], current[k]) for k in shared)  # not loaded yet
    new_before = {k: v.clone() for k, v in current.items() if k not in ckpt}

    BaseModel.load_network(BaseModel.__new__(BaseModel), net, str(path), strict=False)
    loaded = net.state_dict()
    assert len(shared) == len(ckpt) - 4
    for key in shared:
        assert torch.equal(loaded[key], ckpt[key]), key
    for key, value in new_before.items():  # replaced layers keep their initialisation
        assert torch.equal(loaded[key], value), key
    report = net.converse_load_report
    assert sorted(report.loaded) == sorted(shared)
    assert sorted(report.initialised) == sorted(new_before)
    assert report.unused == sorted(['upconv1.weight', 'upconv1.bias', 'upconv2.weight', 'upconv2.bias'])
    assert f'{len(shared)} of {len(current)} tensors loaded' in report.summary()

    # a checkpoint of the converted network loads strictly and completely
    net2 = build_network({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet', 'upscale': 4}})
    net2.load_state_dict(net.state_dict(), strict=True)
    assert net2.converse_load_report.initialised == [] and net2.converse_load_report.unused == []


def test_registered_and_logged():
    assert 'ConverseConverted' in ARCH_REGISTRY
    lines: list[str] = []
    handler, logger = _ListHandler(lines), logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        build_network({'type': 'ConverseConverted', 'network': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3,
                                                                'num_feat': 8, 'num_block': 1, 'upscale': 2}})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = '\n'.join(lines)
    assert 'Converted EDSR to reverse convolution: 2 module(s) replaced' in text
    assert re.search(r'upsample\.0 \[upsample\]: Conv2d\(8, 32, .*\) -> ConverseUpsampler\(conv=Conv2d\(8, 8, .*'
                     r'up=Converse2D\(8, 8, kernel_size=2, scale=2, .*parameters 2,336 -> 624 \(-1,712\)', text)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


# --------------------------------------------------------------------------------- the other rules


class ShuffleTwice(nn.Module):
    """One PixelShuffle used after a conv and after a non-conv tensor: it must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x)) + self.shuffle(x.repeat(1, 4, 1, 1))


def test_pixel_shuffle_kept_when_it_serves_unconverted_inputs():
    net, report = convert_to_converse(ShuffleTwice())
    assert isinstance(net.shuffle, nn.PixelShuffle)
    assert isinstance(net.conv, ConverseUpsampler) and net.conv.unshuffle == 2
    assert net.conv.conv.out_channels == 3 and net.conv.up.scale == 2
    x = torch.rand(1, 3, 6, 6)
    assert net.conv(x).shape == (1, 12, 6, 6)
    # what the kept PixelShuffle makes of it is the Converse2D output itself
    torch.testing.assert_close(net.shuffle(net.conv(x)), net.conv.up(net.conv.conv(x)), rtol=0, atol=0)
    assert net(x).shape == (1, 3, 12, 12)
    assert [r.rule for r in report.replacements] == ['upsample']


class InplaceBetween(nn.Module):
    """conv -> in-place ReLU -> PixelShuffle is not a conv + PixelShuffle stage."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.act(self.conv(x)))


def test_inplace_activation_between_conv_and_shuffle_is_not_converted():
    with pytest.raises(ValueError, match='nothing to convert in InplaceBetween'):
        convert_to_converse(InplaceBetween())


class Decoder(nn.Module):
    def __init__(self, convt: nn.ConvTranspose2d, depthwise: bool = False) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8) if depthwise else nn.Identity()
        self.convt = convt
        self.tail = nn.Conv2d(convt.out_channels, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.convt(self.dw(self.head(x))))


def test_transposed_conv_becomes_converse_upsampler():
    net, report = convert_to_converse(Decoder(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)))
    assert isinstance(net.convt, ConverseUpsampler)
    assert (net.convt.conv.in_channels, net.convt.conv.out_channels, net.convt.conv.kernel_size) == (8, 4, (1, 1))
    assert net.convt.up.scale == 2 and net.convt.up.in_channels == 4
    assert report.replacements[0].rule == 'transposed'
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)

    x3, _ = convert_to_converse(Decoder(nn.ConvTranspose2d(8, 8, 3, stride=3, groups=8)))
    assert x3.convt.conv is None and x3.convt.up.scale == 3  # depthwise: no channel mixing
    assert x3(torch.rand(1, 3, 5, 5)).shape == (1, 3, 15, 15)


def test_transposed_conv_that_does_not_scale_exactly_is_left_alone():
    with pytest.raises(ValueError, match=r'nothing to convert.*convt: its output is not exactly 2x'):
        convert_to_converse(Decoder(nn.ConvTranspose2d(8, 4, 3, stride=2)))


def test_depthwise_rule():
    net, report = convert_to_converse(Decoder(nn.ConvTranspose2d(8, 4, 3, stride=1, padding=1), depthwise=True),
                                      upsample=False, depthwise=True)
    assert isinstance(net.dw, Converse2D)
    assert (net.dw.in_channels, net.dw.kernel_size, net.dw.scale, net.dw.padding) == (8, 3, 1, 2)
    assert [(r.path, r.rule, r.params_before, r.params_after) for r in report.replacements] == [
        ('dw', 'depthwise', 80, 80)]
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize('arch', ['MSRResNet', 'EDSR'])
def test_resblock_rule(arch):
    original = (MSRResNet(num_feat=16, num_block=2, upscale=2) if arch == 'MSRResNet' else
                EDSR(3, 3, num_feat=16, num_block=2, upscale=2))
    net, report = convert_to_converse(original, upsample=False, resblocks=True)
    blocks = [net.body[0], net.body[1]]
    assert all(isinstance(b, ConverseBlock) for b in blocks)
    op = blocks[0].conv1[3]
    assert (op.in_channels, op.kernel_size, op.padding, op.padding_mode) == (32, 5, 4, 'replicate')
    assert [r.path for r in report.replacements] == ['body.0', 'body.1']
    x = torch.rand(1, 3, 8, 8)
    assert net(x).shape == original(x).shape == (1, 3, 16, 16)


def test_shared_module_is_replaced_under_every_path():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(3, 4, 1)  # registered first: the tracing input gets its 3 channels
            stage = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.PixelShuffle(2))
            self.a, self.b = stage, stage

        def forward(self, x):
            return self.b(self.a(self.head(x)))

    net, report = convert_to_converse(Shared())
    assert net.a is net.b and isinstance(net.a[0], ConverseUpsampler) and isinstance(net.a[1], nn.Identity)
    assert report.replacements[0].aliases == ('b.0', )
    assert net(torch.rand(1, 3, 4, 4)).shape == (1, 4, 16, 16)


def test_exclude_leaves_a_layer_alone():
    net, report = convert_to_converse(MSRResNet(num_feat=8, num_block=1, upscale=4), exclude=['upconv2'])
    assert isinstance(net.upconv1, ConverseUpsampler) and net.upconv1.unshuffle == 2
    assert isinstance(net.upconv2, nn.Conv2d) and isinstance(net.pixel_shuffle, nn.PixelShuffle)
    assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 24, 24)


# --------------------------------------------------------------------------------- errors a user can make


@pytest.mark.parametrize('opt, message', [
    ({'type': 'ConverseConverted', 'network': {'type': 'NoSuchNet'}}, r"network_g\.network\.type: unknown network type 'NoSuchNet'"),
    ({'type': 'ConverseConverted', 'network': {'type': 'ConverseConverted'}}, r'cannot be converted again'),
    ({'type': 'ConverseConverted'}, r'network_g\.network: expected the original architecture'),
    ({'type': 'ConverseConverted', 'network': {'upscale': 4}}, r'network_g\.network\.type: missing'),
    ({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet'}, 'upscale': 4},
     r"got also \['upscale'\]"),
    ({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet'}, 'convert': {'upsampel': True}},
     r"network_g\.convert: unknown option\(s\) \['upsampel'\]"),
    ({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet'}, 'convert': {'upsample_padding_mode': 'wrap'}},
     r'network_g\.convert\.upsample_padding_mode: expected one of'),
    ({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet', 'num_feats': 8}},
     r"network_g\.network: MSRResNet: .*unexpected keyword argument 'num_feats'"),
    ({'type': 'ConverseConverted', 'network': {'type': 'MSRResNet'}, 'convert': {'upsample': False}},
     r'every rule is off'),
    ({'type': 'ConverseConverted', 'network': {'type': 'DnCNN', 'num_feat': 8, 'num_conv': 3}},
     r"nothing to convert in DnCNN with the rules \['upsample'\]"),
])
def test_user_errors_name_the_key(opt, message):
    with pytest.raises(ValueError, match=message):
        build_network(opt)


def test_shape_check_catches_a_conv_used_elsewhere():
    class Leaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)
            self.shuffle = nn.PixelShuffle(2)

        def forward(self, x):
            y = self.conv(x)
            return self.shuffle(y), y.mean(1)

    with pytest.raises(RuntimeError, match=r'outputs shapes .* instead of'):
        convert_to_converse(Leaky())


# --------------------------------------------------------------------------------- docs


@pytest.mark.parametrize('obj', [convert_to_converse, ConverseUpsampler, Converse2D, ConverseBlock],
                         ids=lambda o: o.__name__)
def test_docstring_examples(obj):
    assert 'Example:' in obj.__doc__
    module = {convert_to_converse: convert_module, ConverseUpsampler: converse_upsampler,
              ConverseBlock: converse_block}.get(obj)
    globs = {'torch': torch, 'nn': nn, obj.__name__: obj, **(vars(module) if module else {})}
    parser = doctest.DocTestParser()
    test = parser.get_doctest(obj.__doc__, globs, obj.__name__, None, 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def test_public_api():
    for name in ('Converse2D', 'ConverseBlock', 'ConverseUpsampler', 'convert_to_converse', 'ConverseConverted'):
        assert name in converse_plugin.__all__ and getattr(converse_plugin, name) is not None
    assert converse_plugin.converse2d is converse2d


def readme_block(kind: str) -> str:
    """The fenced block between the ``convert-<kind>-start/end`` markers of README.md (the YAML block) or
    docs/convert.md (the Python one)."""
    start, end = f'<!-- convert-{kind}-start -->', f'<!-- convert-{kind}-end -->'
    path = ROOT / ('README.md' if kind == 'yaml' else 'docs/convert.md')
    text = path.read_text(encoding='utf-8')
    assert start in text and end in text, f'no {start} ... {end} block in README.md'
    inner = text.split(start, 1)[1].split(end, 1)[0]
    match = re.search(r'```[a-z]*\n(.*?)```', inner, re.S)
    assert match, f'{path}: no fenced code block between {start} and {end}'
    return match.group(1)


def test_readme_python_snippet_runs():
    code = readme_block('snippet')
    assert 'convert_to_converse' in code
    exec(compile(code, 'README:convert-snippet', 'exec'), {'__name__': 'readme_snippet'})  # noqa: S102


def test_readme_yaml_snippet_builds():
    opt = yaml.safe_load(readme_block('yaml'))
    assert opt['path']['strict_load_g'] is False
    net = build_network(opt['network_g'])
    assert n_params(net) == 1_296_643
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
