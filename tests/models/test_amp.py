"""Mixed precision, torch.compile and safetensors options of ConverseDeblurModel (TrainingSpeedMixin)."""
from __future__ import annotations

import copy

import pytest
import torch

import converse_plugin  # noqa: F401
from converse_plugin.models import ConverseDeblurModel
from converse_plugin.models.training_speed import fuse_optimizer, parse_amp, parse_compile
from converse_plugin.io.checkpoint import load_state_dict_file, read_safetensors_metadata
from converse_plugin.errors import OptionError

NET = {'type': 'ConverseDnCNN', 'num_feat': 8, 'num_block': 1, 'kernel_size': 3, 'padding': 2, 'residual': True}


def make_opt(tmp_path, amp=False, compile_=False, save_format=None) -> dict:
    path = {'pretrain_network_g': None, 'models': str(tmp_path)}
    if save_format:
        path['save_format'] = save_format
    return {'name': 't', 'model_type': 'ConverseDeblurModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
            'rank': 0, 'world_size': 1, 'network_g': dict(NET), 'path': path,
            'train': {'amp': amp, 'compile': compile_, 'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 3e-3},
                      'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                      'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}}


def denoising_batch(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.avg_pool2d(torch.rand(8, 1, 24, 24, generator=g), 3, 1, 1)  # smooth images
    return {'lq': clean + 0.1 * torch.randn(clean.shape, generator=g), 'gt': clean}


def test_parse_amp_and_compile():
    cpu = torch.device('cpu')
    assert parse_amp(False, cpu) is None and parse_amp(None, cpu) is None
    assert parse_amp('bf16', cpu) is torch.bfloat16
    assert parse_amp('fp16', cpu) is torch.float16  # with a GradScaler; slow on most CPUs, but it runs
    with pytest.raises(OptionError, match='train:amp: expected false, bf16 or fp16'):
        parse_amp('int8', cpu)
    assert parse_compile(False) is None and parse_compile(True) == {}
    assert parse_compile({'backend': 'eager'}) == {'backend': 'eager'}
    with pytest.raises(OptionError, match='train:compile'):
        parse_compile('fast')


def record_dtypes(net) -> dict:
    """Output dtype of the head conv and of the first Converse2D layer, filled by forward hooks."""
    dtypes = {}

    def record(name):
        def hook(module, inputs, output) -> None:
            dtypes.setdefault(name, output.dtype)
        return hook

    net.m_head.register_forward_hook(record('conv'))
    net.m_body[0].conv1[3].register_forward_hook(record('converse'))  # the Converse2D layer
    return dtypes


def test_fp16_training_with_grad_scaler_and_its_state_in_the_training_state(tmp_path):
    torch.manual_seed(0)
    opt = make_opt(tmp_path, amp='fp16')
    opt['path']['training_states'] = str(tmp_path)
    model = ConverseDeblurModel(copy.deepcopy(opt))  # BasicSR pops keys from the options
    assert model.amp_dtype is torch.float16 and model.grad_scaler is not None
    dtypes = record_dtypes(model.net_g)
    losses = []
    for it in range(40):
        model.feed_data(denoising_batch(it % 4))
        model.optimize_parameters(it + 1)
        losses.append(model.log_dict['l_pix'])
    assert dtypes == {'conv': torch.float16, 'converse': torch.float32}
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    model.grad_scaler.update(new_scale=1024.0)  # a scale the fresh scaler below does not start from
    model.save_training_state(epoch=0, current_iter=40)
    state = torch.load(tmp_path / '40.state', weights_only=True)
    assert state['grad_scaler']['scale'] == 1024.0
    resumed = ConverseDeblurModel(opt)
    assert resumed.grad_scaler.get_scale() != 1024.0
    resumed.resume_training(state)
    assert resumed.grad_scaler.get_scale() == 1024.0
    assert resumed.grad_scaler.state_dict() == model.grad_scaler.state_dict()


def test_training_state_without_amp_has_no_scaler_entry(tmp_path):
    opt = make_opt(tmp_path)
    opt['path']['training_states'] = str(tmp_path)
    model = ConverseDeblurModel(opt)
    model.save_training_state(epoch=0, current_iter=3)
    assert 'grad_scaler' not in torch.load(tmp_path / '3.state', weights_only=True)


def test_bf16_training_runs_in_bf16_and_the_loss_falls(tmp_path):
    torch.manual_seed(0)
    model = ConverseDeblurModel(make_opt(tmp_path, amp='bf16'))
    assert model.amp_dtype is torch.bfloat16 and model.grad_scaler is None
    net = model.net_g
    dtypes = record_dtypes(net)
    losses = []
    for it in range(40):
        model.feed_data(denoising_batch(it % 4))
        model.optimize_parameters(it + 1)
        losses.append(model.log_dict['l_pix'])
    assert dtypes == {'conv': torch.bfloat16, 'converse': torch.float32}  # autocast on; Converse2D in float32
    assert model.output.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in net.parameters())  # weights stay float32
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_amp_off_is_srmodel_unchanged(tmp_path):
    results = []
    for amp in (False, 'bf16'):
        torch.manual_seed(0)
        model = ConverseDeblurModel(make_opt(tmp_path, amp=amp))
        model.feed_data(denoising_batch(0))
        model.optimize_parameters(1)
        results.append(model.output.detach())
    assert results[0].dtype == torch.float32
    assert not torch.equal(results[0], results[1])  # bf16 really changes the arithmetic
    torch.testing.assert_close(results[0], results[1], rtol=0.05, atol=0.05)  # but not the result


def test_compile_keeps_state_dict_names(tmp_path):
    torch.manual_seed(0)
    model = ConverseDeblurModel(make_opt(tmp_path, compile_={'backend': 'eager'}))
    names = set(model.net_g.state_dict())
    assert not any('_orig_mod' in n for n in names)
    model.feed_data(denoising_batch(0))
    model.optimize_parameters(1)
    assert model.log_dict['l_pix'] > 0


@pytest.mark.parametrize('compile_,optim,fused', [
    ({'backend': 'eager'}, {}, True),                       # compile: Adam gets the fused update
    ({'backend': 'eager'}, {'foreach': False}, None),       # the user's choice is kept
    ({'backend': 'eager'}, {'fused': False}, False),
    (False, {}, None),                                      # no compile: BasicSR's Adam unchanged
])
def test_compile_fuses_an_adam_that_chooses_no_implementation(tmp_path, compile_, optim, fused):
    opt = make_opt(tmp_path, compile_=compile_)
    opt['train']['optim_g'].update(optim)
    model = ConverseDeblurModel(opt)
    assert model.optimizer_g.defaults['fused'] is fused
    model.feed_data(denoising_batch(0))
    model.optimize_parameters(1)
    assert model.log_dict['l_pix'] > 0


def test_fuse_optimizer_only_touches_adam_and_adamw():
    assert fuse_optimizer({'type': 'AdamW', 'lr': 1e-3}) is True
    for optim in ({'type': 'SGD', 'lr': 1e-3}, {'type': 'Adam', 'foreach': True}, None, 'Adam'):
        before = copy.deepcopy(optim)
        assert fuse_optimizer(optim) is False
        assert optim == before


def test_save_format_safetensors_writes_both(tmp_path):
    torch.manual_seed(0)
    model = ConverseDeblurModel(make_opt(tmp_path, save_format='safetensors'))
    model.save_network(model.net_g, 'net_g', 5)
    st = tmp_path / 'net_g_5.safetensors'
    assert (tmp_path / 'net_g_5.pth').is_file() and st.is_file()
    loaded = load_state_dict_file(st)
    expected = model.net_g.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert read_safetensors_metadata(st) == {'param_key': 'params', 'arch': 'ConverseDnCNN'}
    with pytest.raises(OptionError, match='path:save_format'):
        ConverseDeblurModel(make_opt(tmp_path, save_format='onnx'))


def test_pretrain_network_g_safetensors_loads(tmp_path):
    torch.manual_seed(0)
    source = ConverseDeblurModel(make_opt(tmp_path, save_format='safetensors'))
    source.save_network(source.net_g, 'net_g', 7)
    opt = make_opt(tmp_path)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'net_g_7.safetensors')
    torch.manual_seed(1)  # a different initialisation, overwritten by the file
    model = ConverseDeblurModel(opt)
    for key, value in source.net_g.state_dict().items():
        assert torch.equal(model.net_g.state_dict()[key], value), key


def test_compile_modes_and_cuda_graph_modes_on_the_cpu():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert parse_compile('default', cpu) == {'mode': 'default'}
    # no mode on the CPU: inductor's aggressive_fusion (the option file's own options win); not with a mode,
    # another backend or another device
    assert parse_compile(True, cpu) == {'options': {'aggressive_fusion': True}}
    assert parse_compile({'options': {'aggressive_fusion': False, 'trace.enabled': False}}, cpu) == {
        'options': {'aggressive_fusion': False, 'trace.enabled': False}}
    assert parse_compile({'backend': 'eager'}, cpu) == {'backend': 'eager'}
    assert parse_compile(True, torch.device('cuda')) == {}
    assert parse_compile({'mode': 'max-autotune-no-cudagraphs', 'fullgraph': True}, cpu) == {
        'mode': 'max-autotune-no-cudagraphs', 'fullgraph': True}
    assert parse_compile('reduce-overhead', cuda) == {'mode': 'reduce-overhead'}
    for mode in ('reduce-overhead', 'max-autotune'):
        with pytest.raises(OptionError, match=f"train:compile:mode '{mode}' captures CUDA graphs.*use mode default"):
            parse_compile(mode, cpu)
    with pytest.raises(OptionError, match='train:compile: unknown key'):
        parse_compile({'modes': 'default'}, cpu)
    with pytest.raises(OptionError, match='train:compile:fullgraph: expected true, false'):
        parse_compile({'fullgraph': 'yes'}, cpu)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.usefixtures('no_tf32')
@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
def test_cuda_compile_modes_train_as_eager_does(tmp_path, mode):
    """``train: compile: <mode>`` on CUDA (reduce-overhead: CUDA graphs for fixed crops): the losses of three
    steps equal eager's (float32, TF32 off), and the state dict keeps eager's names."""
    losses, names = [], []
    for compile_ in (False, mode):
        torch._dynamo.reset()
        torch.manual_seed(0)
        opt = make_opt(tmp_path, compile_=compile_)
        opt['num_gpu'] = 1
        model = ConverseDeblurModel(opt)
        assert next(model.net_g.parameters()).is_cuda
        run = []
        for step in range(3):
            model.feed_data(denoising_batch(step))
            model.optimize_parameters(step + 1)
            run.append(model.log_dict['l_pix'])
        losses.append(run)
        names.append(set(model.net_g.state_dict()))
    assert names[0] == names[1] and not any('_orig_mod' in n for n in names[1])
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-5)  # the same weights: the same loss
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)         # Adam (fused under compile) keeps it close
