"""``val: tile`` in ConverseModel: the network runs on overlapping tiles; the result is close to the whole
image's, exactly the whole image's when one tile covers it, and bad values are refused by key."""
from __future__ import annotations

import pytest
import torch

import converse_plugin  # noqa: F401
from basicsr.models import build_model  # noqa: E402  isort: skip

from converse_plugin.models.converse_model import tile_options
from tests.models.test_converse_deblur_model import make_opt

SR = {'type': 'ConverseMSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}


def run(tile, lq):
    opt = make_opt(SR, is_train=False, scale=2)
    opt['model_type'] = 'ConverseModel'
    opt['val'] = {} if tile is None else {'tile': tile}
    torch.manual_seed(0)
    model = build_model(opt)
    model.feed_data({'lq': lq})
    model.test()
    return model.output


def test_tiled_output_has_the_whole_image_shape():
    lq = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(1))
    lq = torch.nn.functional.avg_pool2d(lq, 3, 1, 1)  # smooth, image-like content
    whole = run(None, lq)
    tiled = run({'size': 24, 'overlap': 8}, lq)
    assert tiled.shape == whole.shape == (1, 3, 80, 104)
    assert not torch.equal(tiled, whole)  # it really tiled
    assert torch.isfinite(tiled).all()


@pytest.mark.reproduction
def test_released_x4_model_tiled_is_within_0_05_db_on_set14_images():
    from basicsr.data import build_dataset
    from basicsr.utils import tensor2img

    from converse_plugin.metrics.psnr_ssim import calculate_psnr_y_matlab
    from tests.conftest import require_shared

    checkpoint = require_shared('zoo', 'converse_srresnet.pth')
    dataset = build_dataset({'name': 'Set14', 'type': 'BicubicDownsampleDataset', 'phase': 'test', 'scale': 4,
                             'dataroot_gt': str(require_shared('data', 'Set14', 'HR')), 'io_backend': {'type': 'disk'}})
    opt = make_opt({'type': 'ConverseMSRResNet'}, is_train=False, scale=4)
    opt.update(model_type='ConverseModel', path={'pretrain_network_g': str(checkpoint), 'param_key_g': None,
                                                 'strict_load_g': True})
    model = build_model(opt)
    for i in range(len(dataset)):
        item = dataset[i]
        if not item['gt_path'].endswith(('comic.png', 'foreman.png')):  # small images: a fast test
            continue
        psnr = {}
        for tile in (None, {'size': 32, 'overlap': 12}):
            model.opt['val'] = {} if tile is None else {'tile': tile}
            model.feed_data({'lq': item['lq'][None]})
            model.test()
            psnr[bool(tile)] = calculate_psnr_y_matlab(tensor2img(model.output), tensor2img(item['gt'][None]), 4)
        assert abs(psnr[True] - psnr[False]) < 0.05, (item['gt_path'], psnr)


def test_one_tile_covering_the_image_is_the_whole_image():
    lq = torch.rand(1, 3, 20, 20)
    assert torch.equal(run({'size': 32, 'overlap': 4}, lq), run(None, lq))


@pytest.mark.parametrize('tile,expected', [(None, (0, 0)), (64, (64, 8)), ({'size': 48, 'overlap': 16}, (48, 16))])
def test_tile_options(tile, expected):
    assert tile_options({'tile': tile}) == expected


@pytest.mark.parametrize('tile,words', [
    ({'size': 0}, 'val:tile:size'), ({'size': 32, 'overlap': 32}, 'val:tile:overlap'),
    ({'size': 32, 'stride': 4}, 'val:tile must be'), ('big', 'val:tile must be'),
])
def test_bad_tile_options_name_the_key(tile, words):
    with pytest.raises(ValueError, match=words):
        tile_options({'tile': tile})
