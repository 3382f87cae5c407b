"""Guard: the BasicSR functions and classes the plugin relies on are exactly those of BasicSR 1.4.2.

The engine and the model base class call these through BasicSR's public API and depend on their
behaviour (the loop's data loaders and loggers, ``check_resume``, the registries' name rule, SRModel's
training settings and validation, BaseModel's optimizer/scheduler/EMA handling). A BasicSR upgrade that
changes any of them fails here, naming it: review the plugin's use of it, then update its hash below, so
that an upgrade is a deliberate step.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect

import pytest

import converse_plugin  # noqa: F401  (the environment fixes before BasicSR is imported)

# 'module:name' -> sha256 (first 16 hex digits) of inspect.getsource in BasicSR 1.4.2
RELIED_ON = {
    'basicsr.train:create_train_val_dataloader': '7dc43480652eb6f4',
    'basicsr.train:init_tb_loggers': 'd0cacbb1f0193a72',
    'basicsr.utils.logger:MessageLogger': 'aab827f677bb9bfc',
    'basicsr.utils.logger:AvgTimer': '5544d92c446dadbb',
    'basicsr.utils.logger:get_root_logger': 'fa49ed80ef6b45a4',
    'basicsr.utils.logger:get_env_info': 'e48862b4bd998fc4',
    'basicsr.utils.misc:make_exp_dirs': '12f9afe99aa1259e',
    'basicsr.utils.misc:mkdir_and_rename': '558067dec4933c52',
    'basicsr.utils.misc:check_resume': '3ccf4c729292b0fc',
    'basicsr.utils.misc:get_time_str': '7735ca8c23731d94',
    'basicsr.utils.misc:set_random_seed': '47e0c829705201a7',
    'basicsr.utils.dist_util:get_dist_info': '267b048d9ec51ebf',
    'basicsr.utils.dist_util:master_only': '308d0413a21412aa',
    'basicsr.utils.options:dict2str': '769e9c110eeb4a0d',
    'basicsr.utils.registry:Registry': 'dbd2cb1060000565',
    'basicsr.data:build_dataset': 'e40d296218c75833',
    'basicsr.data:build_dataloader': '5a72348149df5222',
    'basicsr.data.prefetch_dataloader:CPUPrefetcher': '38377b4fad3d30c5',
    'basicsr.data.prefetch_dataloader:CUDAPrefetcher': '4af41a9dd6006e0d',
    'basicsr.models.base_model:BaseModel': '4aa7ad3121b4d203',
    'basicsr.models.sr_model:SRModel': '74182a91d4efe538',
    'basicsr.models.srgan_model:SRGANModel': '2d95ce542f88d819',
    'basicsr.metrics:calculate_metric': '39447a3cb01a4b29',
    'basicsr.utils.img_util:tensor2img': '33df3a6b58349824',
    'basicsr.utils.img_util:imwrite': 'ed421943c3df3300',
}


def test_basicsr_version_is_the_one_the_plugin_targets():
    import basicsr
    assert basicsr.__version__.startswith('1.4.2'), f'converse_plugin targets basicsr 1.4.2, found {basicsr.__version__}'


@pytest.mark.parametrize('name', sorted(RELIED_ON))
def test_relied_on_basicsr_source_is_unchanged(name):
    module, attr = name.split(':')
    source = inspect.getsource(getattr(importlib.import_module(module), attr))
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == RELIED_ON[name], (
        f'{name} changed in this BasicSR (sha256 {digest}, expected {RELIED_ON[name]}): review how '
        'converse_plugin uses it (engine/, models/base_model.py, registries.py), then update RELIED_ON')


def test_registry_get_resolves_the_basicsr_suffix_as_the_plugin_assumes():
    from converse_plugin.registries import lookup
    from basicsr.utils.registry import ARCH_REGISTRY
    assert 'SRVGGNetCompact_basicsr' in ARCH_REGISTRY
    expected = ARCH_REGISTRY._obj_map.get('SRVGGNetCompact') or ARCH_REGISTRY._obj_map['SRVGGNetCompact_basicsr']
    assert lookup('network', 'SRVGGNetCompact') is expected
