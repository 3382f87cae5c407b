"""DnCNN, the plain baseline (Zhang et al. 2017) in KAIR's layout, so ConverseNets can be compared with
a zoo model: conv + ReLU, (num_conv - 2) x (conv + ReLU) with batch norm merged into the convs, conv;
outputs x - noise (residual learning)."""
from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class DnCNN(nn.Module):
    """Keys ``model.0`` ... ``model.{2 (num_conv - 1)}``, convolutions at even indices (KAIR's file
    dncnn_25.pth loads strictly). Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, H, W)."""

    def __init__(self, num_in_ch: int = 1, num_out_ch: int = 1, num_feat: int = 64, num_conv: int = 17) -> None:
        super().__init__()
        if num_conv < 2:
            raise ValueError(f'num_conv must be >= 2, got {num_conv}')
        if num_in_ch != num_out_ch:
            raise ValueError(f'DnCNN predicts the noise: num_in_ch ({num_in_ch}) must equal num_out_ch ({num_out_ch})')
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(num_conv - 2):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(num_feat, num_out_ch, 3, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.model(x)
