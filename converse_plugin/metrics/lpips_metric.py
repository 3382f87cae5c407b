"""LPIPS (Zhang et al. 2018, v0.1) as a BasicSR metric that works without internet.

Use it in any ``val.metrics`` block::

    lpips:
      type: calculate_lpips
      crop_border: 0
      net: alex            # or vgg
      # backbone_path: /path/alexnet-owt-7be5be79.pth   (optional, see lpips_backbone)
      # device: cuda       (default: cuda when available, else cpu)
      better: lower

Calling convention: BasicSR's (uint8 HWC BGR images in [0, 255], ``crop_border``, extra keys
accepted). Gray images are repeated to three channels. LPIPS compares colour images:
``test_y_channel: true`` is refused. Lower is better. The network is built once per
(net, backbone, device) and reused.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from converse_plugin.metrics.lpips_backbone import check_net, resolve_backbone

__all__ = ['calculate_lpips', 'build_lpips', 'image_to_lpips_tensor']

_MIN_SIZE = 32  # AlexNet's strided conv and two max-pools leave nothing of smaller inputs
_NETWORKS: dict[tuple[str, str | None, str], torch.nn.Module] = {}


def default_device() -> torch.device:
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def build_lpips(net: str = 'alex', backbone_path: str | None = None,
                device: str | torch.device | None = None) -> torch.nn.Module:
    """The ``lpips.LPIPS`` network (linear layers from the lpips package, trunk from
    :func:`~converse_plugin.metrics.lpips_backbone.resolve_backbone`), cached and in eval mode."""
    import lpips

    net = check_net(net)
    device = torch.device(device) if device is not None else default_device()
    key = (net, backbone_path, str(device))
    if key not in _NETWORKS:
        features, _ = resolve_backbone(net, backbone_path)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
            warnings.simplefilter('ignore', UserWarning)
            model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # random trunk: no download
        for slice_ in model.net.children():
            for index, layer in slice_.named_children():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.data.copy_(features[f'features.{index}.weight'])
                    layer.bias.data.copy_(features[f'features.{index}.bias'])
        _NETWORKS[key] = model.to(device).eval().requires_grad_(False)
    return _NETWORKS[key]


def image_to_lpips_tensor(img: np.ndarray, input_order: str = 'HWC') -> torch.Tensor:
    """uint8-range BGR (or gray) image -> (1, 3, H, W) RGB float tensor in [-1, 1]."""
    img = np.asarray(img, dtype=np.float64)
    if input_order == 'CHW' and img.ndim == 3:
        img = img.transpose(1, 2, 0)
    elif input_order not in ('HWC', 'CHW'):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 3:
        img = img[..., ::-1]  # BGR -> RGB
    else:
        raise ValueError(f'LPIPS needs gray or 3-channel images, got shape {img.shape}')
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    return (tensor / 127.5 - 1.0).unsqueeze(0)


@METRIC_REGISTRY.register()
def calculate_lpips(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, input_order: str = 'HWC',
                    test_y_channel: bool = False, net: str = 'alex', backbone_path: str | None = None,
                    device: str | None = None, **kwargs) -> float:
    """LPIPS distance between two images (uint8 HWC BGR, range [0, 255]); lower is better.

    Args:
        crop_border: pixels cut from each side before comparing.
        test_y_channel: must be false (LPIPS is defined on RGB).
        net: 'alex' (default, as in the paper's tables) or 'vgg'.
        backbone_path: a torchvision state dict for the trunk (else the cache / env vars).
        device: where the network runs (default cuda when available, else cpu).
    """
    if test_y_channel:
        raise ValueError('calculate_lpips: test_y_channel: true is not supported (LPIPS compares RGB '
                         'images); remove the key or set it to false')
    if np.shape(img) != np.shape(img2):
        raise ValueError(f'Image shapes differ: {np.shape(img)} vs {np.shape(img2)}')
    model = build_lpips(net, backbone_path, device)
    x, y = (image_to_lpips_tensor(i, input_order) for i in (img, img2))
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    if min(x.shape[-2:]) < _MIN_SIZE:
        raise ValueError(f'calculate_lpips: images of {x.shape[-2]}x{x.shape[-1]} pixels (after crop_border) are '
                         f'too small for the {net} network; LPIPS needs at least {_MIN_SIZE}x{_MIN_SIZE}')
    dev = next(model.parameters()).device
    with torch.no_grad():
        return float(model(x.to(dev), y.to(dev)).item())
