"""spandrel support: ConverseNets load through spandrel.ModelLoader (released files, BasicSR training
checkpoints, safetensors exports) with hyperparameters read from the tensors and the plugin's own outputs;
other architectures' checkpoints are not claimed; ConverseUSRNet and malformed files give clear errors;
the README snippet runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

spandrel = pytest.importorskip('spandrel',
                               reason="spandrel is an optional extra: pip install 'converse-plugin[spandrel]'")

import converse_plugin.integrations.spandrel as cs  # noqa: E402
from converse_plugin.archs import ConverseDnCNN, ConverseMSRResNet, ConverseNet, ConverseUSRNet, DnCNN  # noqa: E402
from tests.conftest import ROOT, require_shared  # noqa: E402

CONVERSE_IDS = {'ConverseDnCNN', 'ConverseMSRResNet', 'ConverseNet', 'ConverseUSRNet'}


@pytest.fixture(scope='module')
def plain_registry():
    """spandrel's own architectures only (MAIN_REGISTRY may already have ours from another test)."""
    registry = spandrel.ArchRegistry()
    registry.add(*[a for a in spandrel.MAIN_REGISTRY.architectures() if a.architecture.id not in CONVERSE_IDS])
    return registry


@pytest.fixture(scope='module')
def registry(plain_registry):
    registry = plain_registry.copy()
    assert len(cs.install(registry)) == 4
    return registry


@pytest.fixture(scope='module')
def loader(registry):
    return spandrel.ModelLoader(registry=registry)


def run(model, x):
    with torch.inference_mode():
        return model(x)


def randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights away from the init (gates non-zero, kernels not softmaxed), so outputs depend on all."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def test_install_is_idempotent_and_orders_before_scunet(plain_registry):
    registry = plain_registry.copy()
    added = cs.install(registry)
    assert {a.architecture.id for a in added} == CONVERSE_IDS
    assert cs.install(registry) == []
    assert len(registry) == len(plain_registry) + 4
    order = [a.architecture.id for a in registry.architectures('detection')]
    assert order.index('ConverseDnCNN') < order.index('SCUNet')  # SCUNet's detector claims ConverseDnCNN files
    assert len(cs.install(spandrel.ArchRegistry())) == 4  # a registry without SCUNet works too


# ---------------------------------------------------------------------------------------------------------
# Released checkpoints: metadata and the plugin's own outputs
# ---------------------------------------------------------------------------------------------------------
RELEASED = {  # file: (model class, in/out channels, scale, purpose, minimum side, tags)
    'converse_dncnn.pth': (ConverseDnCNN, 1, 1, 'Restoration', 6, ['64nf', '20nb', 'k7']),
    'converse_srresnet.pth': (ConverseMSRResNet, 3, 4, 'SR', 0, ['4x', '64nf', '16nb', 'k5']),
    'conversenet.pth': (ConverseNet, 3, 1, 'Restoration', 2, ['64nf', '7nb', 'k3', '5it']),
}


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_released_checkpoint_loads_like_the_plugin(loader, name):
    cls, channels, scale, purpose, minimum, tags = RELEASED[name]
    path = require_shared('zoo', name)
    desc = loader.load_from_file(path)
    assert isinstance(desc, spandrel.ImageModelDescriptor)
    assert desc.architecture.id == cls.__name__ and type(desc.model) is cls
    assert (desc.scale, desc.purpose, desc.input_channels, desc.output_channels) == (scale, purpose, channels, channels)
    assert desc.size_requirements == spandrel.SizeRequirements(minimum=minimum)
    assert desc.tiling == spandrel.ModelTiling.SUPPORTED and desc.tags == tags
    assert not desc.supports_half and not desc.supports_bfloat16

    ref = cls().eval()
    ref.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
    x = torch.rand(1, channels, 12, 10, generator=torch.Generator().manual_seed(0))
    expected = run(ref, x)
    assert expected.shape == (1, channels, 12 * scale, 10 * scale)
    assert torch.equal(run(desc.model, x), expected)
    assert torch.equal(desc(x), expected.clamp(0, 1))  # spandrel's call clamps to [0, 1]


def test_size_requirements_are_what_the_operator_needs(loader, shared):
    desc = loader.load_from_file(shared('zoo', 'converse_dncnn.pth'))  # circular padding 6
    small = torch.rand(1, 1, 5, 4)
    with pytest.raises(ValueError, match='circular'):
        run(desc.model, small)  # the network itself cannot pad 6 pixels circularly
    assert desc(small).shape == (1, 1, 5, 4)  # spandrel pads to the minimum and crops back
    assert run(desc.model, torch.rand(1, 1, 6, 6)).shape == (1, 1, 6, 6)


def test_half_and_bfloat16_are_refused_honestly(loader, shared):
    """Both flags are False because a cast model does not run: Converse2D returns float32 between
    half-precision layers. If this ever runs, revisit supports_half / supports_bfloat16."""
    desc = loader.load_from_file(shared('zoo', 'conversenet.pth'))
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(spandrel.UnsupportedDtypeError):
            desc.to(dtype)
        net = ConverseNet(num_feat=4, num_block=1).eval().to(dtype)
        with pytest.raises(RuntimeError, match='should be the same'):
            run(net, torch.rand(1, 3, 8, 8, dtype=dtype))


# ---------------------------------------------------------------------------------------------------------
# Training checkpoints and safetensors exports with non-default hyperparameters
# ---------------------------------------------------------------------------------------------------------
CONFIGS = {  # padding follows the k - 1 rule (not stored in tensors)
    'dncnn_rgb_gated': (ConverseDnCNN, dict(num_in_ch=3, num_out_ch=3, num_feat=12, num_block=3, kernel_size=5,
                                            padding=4, gated=True)),
    'dncnn_gray_to_rgb': (ConverseDnCNN, dict(num_in_ch=1, num_out_ch=3, num_feat=6, num_block=2, kernel_size=2,
                                              padding=1, gated=False)),
    'srresnet_x2_gray': (ConverseMSRResNet, dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=2, upscale=2,
                                                 kernel_size=3, padding=2, up_kernel_size=3)),
    'srresnet_x8': (ConverseMSRResNet, dict(num_in_ch=3, num_out_ch=3, num_feat=6, num_block=1, upscale=8,
                                            kernel_size=4, padding=3, up_kernel_size=2)),
    'srresnet_x1_no_body': (ConverseMSRResNet, dict(num_in_ch=3, num_out_ch=3, num_feat=4, num_block=0, upscale=1,
                                                    kernel_size=3, padding=2)),
    'conversenet_gray': (ConverseNet, dict(num_in_ch=1, num_out_ch=1, num_feat=10, num_block=2, kernel_size=5,
                                           padding=4)),
}


def write_checkpoint(path: Path, fmt: str, net: torch.nn.Module, other: torch.nn.Module) -> Path:
    if fmt == 'basicsr':  # what `basicsr train` saves: params and its EMA (the one to load)
        path = path.with_suffix('.pth')
        torch.save({'params': other.state_dict(), 'params_ema': net.state_dict()}, path)
    else:  # what `basicsr export --format safetensors` writes: the state dict, metadata beside it
        from safetensors.torch import save_file
        path = path.with_suffix('.safetensors')
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
                  metadata={'arch': type(net).__name__, 'param_key': 'params_ema'})
    return path


@pytest.mark.parametrize('fmt', ('basicsr', 'safetensors'))
@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_trained_checkpoint_hyperparameters_read_from_tensors(loader, tmp_path, config, fmt):
    cls, kwargs = CONFIGS[config]
    net, other = randomize(cls(**kwargs), 1), randomize(cls(**kwargs), 2)
    desc = loader.load_from_file(write_checkpoint(tmp_path / config, fmt, net, other))
    assert desc.architecture.id == cls.__name__
    hyper = desc.architecture.hyperparameters(net.state_dict())
    assert {k: hyper[k] for k in kwargs} == kwargs
    scale = kwargs.get('upscale', 1)
    assert (desc.scale, desc.input_channels, desc.output_channels) == (scale, kwargs['num_in_ch'],
                                                                       kwargs['num_out_ch'])
    assert desc.purpose == ('SR' if scale > 1 else 'Restoration')
    x = torch.rand(1, kwargs['num_in_ch'], 9, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(run(desc.model, x), run(net, x))  # params_ema, not params, and the same network


def test_values_not_in_tensors_come_from_the_arch_constructor(tmp_path):
    net = randomize(ConverseNet(num_feat=6, num_block=1, num_iter=3, padding=1, padding_mode='reflect'), 4)
    sd = net.state_dict()
    default = cs.ConverseNetArch().load(sd)
    assert default.model.num_iter == 5  # the shared prior makes 3 iterations look like 5
    desc = cs.ConverseNetArch(num_iter=3, padding=1, padding_mode='reflect').load(sd)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(run(desc.model, x), run(net, x))
    assert desc.size_requirements.minimum == 2  # reflect padding 1 needs sides >= 2

    x3 = randomize(ConverseMSRResNet(num_feat=4, num_block=1, upscale=3), 5)
    assert cs.ConverseMSRResNetArch().load(x3.state_dict()).scale == 2  # one stage reads as x2
    desc = cs.ConverseMSRResNetArch(upscale=3).load(x3.state_dict())
    assert desc.scale == 3 and torch.equal(run(desc.model, x), run(x3, x))
    with pytest.raises(cs.ConverseSpandrelError, match='upscale=4 does not fit'):
        cs.ConverseMSRResNetArch(upscale=4).load(x3.state_dict())
    with pytest.raises(TypeError, match='num_feat cannot be set'):
        cs.ConverseNetArch(num_feat=8)


# ---------------------------------------------------------------------------------------------------------
# Other architectures are not claimed, and still load as themselves
# ---------------------------------------------------------------------------------------------------------
OTHERS = {  # name: spandrel's arch id for it, None where spandrel does not support it
    'plugin DnCNN': 'DnCNN', 'KAIR DnCNN (zoo)': 'DnCNN', 'MSRResNet': None, 'EDSR': None, 'RRDBNet': 'ESRGAN',
    'SwinIR': 'SwinIR', 'SCUNet (ConverseDnCNN is ordered before it)': 'SCUNet'}


def other_state_dict(name: str) -> dict[str, torch.Tensor]:
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.srresnet_arch import MSRResNet
    from basicsr.archs.swinir_arch import SwinIR
    if name.startswith('SCUNet'):  # not in BasicSR: spandrel's own class defines the layout
        from spandrel.architectures.SCUNet import SCUNet
        return SCUNet(config=[1] * 7, dim=32).state_dict()
    if name == 'KAIR DnCNN (zoo)':
        return torch.load(require_shared('zoo', 'kair_dncnn_sigma25.pth'), map_location='cpu', weights_only=True)
    return {'plugin DnCNN': lambda: DnCNN(num_feat=8),
            'MSRResNet': lambda: MSRResNet(num_feat=8, num_block=2, upscale=4),
            'EDSR': lambda: EDSR(3, 3, num_feat=8, num_block=2, upscale=2),
            'RRDBNet': lambda: RRDBNet(3, 3, num_feat=16, num_block=1, num_grow_ch=32),  # spandrel assumes 32
            'SwinIR': lambda: SwinIR(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[2], num_heads=[2],
                                     mlp_ratio=2, upsampler='pixelshuffle')}[name]().state_dict()


def outcome(registry, state_dict):
    try:
        return registry.load(state_dict).architecture.id
    except spandrel.UnsupportedModelError:
        return None


@pytest.mark.parametrize('name', sorted(OTHERS))
def test_other_architectures_are_not_claimed(registry, plain_registry, name):
    sd = spandrel.canonicalize_state_dict(other_state_dict(name))
    claims = [a.architecture.id for a in registry.architectures() if a.architecture.id in CONVERSE_IDS
              and a.detect(sd)]
    assert claims == []
    assert outcome(plain_registry, sd) == OTHERS[name]
    assert outcome(registry, sd) == OTHERS[name]  # loads as itself with the ConverseNets installed


def test_converse_checkpoints_are_claimed_only_by_their_own_arch(registry):
    nets = {'ConverseDnCNN': ConverseDnCNN(num_feat=4, num_block=1),
            'ConverseNet': ConverseNet(num_feat=4, num_block=1),
            'ConverseMSRResNet': ConverseMSRResNet(num_feat=4, num_block=1),
            'ConverseUSRNet': ConverseUSRNet(num_feat=4, num_block=1, num_iter=2)}
    for arch_id, net in nets.items():
        claims = [a.architecture.id for a in registry.architectures() if a.architecture.id in CONVERSE_IDS
                  and a.detect(net.state_dict())]
        assert claims == [arch_id]
        first = next(a for a in registry.architectures('detection') if a.detect(net.state_dict()))
        assert first.architecture.id == arch_id  # no spandrel arch ahead of ours takes it


# ---------------------------------------------------------------------------------------------------------
# ConverseUSRNet and malformed files: clear errors
# ---------------------------------------------------------------------------------------------------------
def test_usrnet_is_refused_with_a_clear_error(loader, shared):
    with pytest.raises(cs.ConverseSpandrelError, match='needs the blur kernel') as info:
        loader.load_from_file(shared('zoo', 'converse_usrnet.pth'))
    assert isinstance(info.value, spandrel.UnsupportedModelError) and isinstance(info.value, ValueError)
    assert 'load_usrnet' in str(info.value)


def gaussian_kernel(k: int, sigma: float) -> torch.Tensor:
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def test_load_usrnet_with_a_fixed_kernel(shared):
    path = shared('zoo', 'converse_usrnet.pth')
    kernel = gaussian_kernel(7, 1.6)
    desc = cs.load_usrnet(path, kernel)
    assert (desc.architecture.id, desc.scale, desc.purpose) == ('ConverseUSRNet', 1, 'Restoration')
    assert 'fixed-kernel' in desc.tags and desc.size_requirements.minimum == 2
    ref = ConverseUSRNet().eval()
    ref.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(desc.model(x), ref(x, kernel[None, None]))
    with pytest.raises(cs.ConverseSpandrelError, match='7x7 blur kernel'):
        cs.load_usrnet(path, gaussian_kernel(5, 1.0))
    with pytest.raises(cs.ConverseSpandrelError, match='not a ConverseUSRNet'):
        cs.load_usrnet(shared('zoo', 'conversenet.pth'), kernel)


def test_load_usrnet_reads_hyperparameters(tmp_path):
    kwargs = dict(num_in_ch=1, num_out_ch=1, num_feat=6, num_block=2, num_iter=3, kernel_size=5, kernel_feat=4,
                  kernel_hidden=10, prior_kernel_size=3, padding=2)
    net, other = randomize(ConverseUSRNet(**kwargs), 6), randomize(ConverseUSRNet(**kwargs), 7)
    path = write_checkpoint(tmp_path / 'usrnet', 'basicsr', net, other)
    kernel = gaussian_kernel(5, 1.0)
    desc = cs.load_usrnet(path, kernel, sf=2)
    assert (desc.scale, desc.purpose, desc.input_channels) == (2, 'SR', 1)
    hyper = desc.architecture.hyperparameters(net.state_dict())
    assert {k: hyper[k] for k in kwargs} == kwargs
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(desc.model(x), net(x, kernel, 2))


def test_malformed_converse_checkpoints_get_clear_errors(loader):
    sd = ConverseNet(num_feat=8, num_block=2).state_dict()
    wrong = dict(sd, **{'p.m_body.1.conv1.3.weight': torch.zeros(1, 16, 5, 5)})  # block 1's kernel size differs
    with pytest.raises(cs.ConverseSpandrelError, match=r'wrong shape: p\.m_body\.1\.conv1\.3\.weight'):
        loader.load_from_state_dict(wrong)
    missing = {k: v for k, v in sd.items() if k != 'p.m_body.1.conv2.3.bias'}
    with pytest.raises(cs.ConverseSpandrelError, match=r'missing: p\.m_body\.1\.conv2\.3\.bias'):
        loader.load_from_state_dict(missing)
    extra = dict(sd, **{'p.m_body.0.alpha2': torch.zeros(1, 8, 1, 1)})
    with pytest.raises(cs.ConverseSpandrelError, match=r'unexpected: p\.m_body\.0\.alpha2'):
        loader.load_from_state_dict(extra)

    sr = ConverseMSRResNet(num_feat=4, num_block=1).state_dict()
    for i in (3, 4):  # four upsampling stages: no such upscale
        sr[f'up{i}.weight'], sr[f'up{i}.bias'] = sr['up1.weight'], sr['up1.bias']
    with pytest.raises(cs.ConverseSpandrelError, match='4 upsampling stages'):
        loader.load_from_state_dict(sr)

    dn = ConverseDnCNN(num_feat=4, num_block=1).state_dict()
    dn['m_head.0.weight'] = torch.zeros(4)  # 1-D: cannot be a 1x1 convolution
    with pytest.raises(cs.ConverseSpandrelError, match='cannot read the hyperparameters'):
        loader.load_from_state_dict(dn)


# ---------------------------------------------------------------------------------------------------------
# The README section
# ---------------------------------------------------------------------------------------------------------
def readme_snippet() -> str:
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    section = text.split('## Use in chaiNNer / ComfyUI via spandrel', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_readme_snippet_runs(shared, capsys):
    zoo = shared('zoo')
    code, count = re.subn(r"^zoo = .*$", f'zoo = {str(zoo)!r}', readme_snippet(), flags=re.M)
    assert count == 1, 'the snippet names the checkpoint folder in one line `zoo = ...`'
    exec(compile(code, 'README.md', 'exec'), {})  # noqa: S102 - our own README
    assert capsys.readouterr().out.split() == ['ConverseMSRResNet', '4', 'SR', '(1,', '3,', '64,', '64)']
