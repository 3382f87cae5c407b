"""ConverseMSRResNet: an SRResNet-like super-resolver with Converse2D upsamplers (spec §3)."""
from __future__ import annotations

import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from converse_plugin.archs.converse_block import ConverseBlock, apply_layer, make_operator, run_blocks


def upsample_factors(upscale: int) -> list[int]:
    """The per-stage factors: x2 -> [2], x3 -> [3], x4 -> [2, 2], x8 -> [2, 2, 2]."""
    table = {1: [], 2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}
    if upscale not in table:
        raise ValueError(f'upscale must be one of {sorted(table)}, got {upscale!r}')
    return table[upscale]


@ARCH_REGISTRY.register()
class ConverseMSRResNet(nn.Module):
    """conv_first 1x1 -> GELU -> ``num_block`` ConverseBlocks -> per up stage i:
    (upconv{i} ConverseBlock -> up{i} Converse2D(scale f_i) -> GELU) -> conv_hres ConverseBlock -> GELU
    -> conv_last 1x1 (no bias); plus bilinear upsampling of the input.

    Defaults reproduce the released x4 model (converse_srresnet.pth, 699,072 parameters); ``upscale``
    2, 3, 4 or 8. ``operator`` ('converse' | 'conv' | 'convt') swaps every Converse2D, in the blocks and
    in the upsamplers, for the paper's Conv-/ConvT- ablations. ``checkpoint_blocks=True`` recomputes each
    ConverseBlock in the backward pass (less memory, same results).

    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, upscale*H, upscale*W).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4, kernel_size: int = 5, padding: int = 4, padding_mode: str = 'replicate',
                 eps: float = 1e-5, up_kernel_size: int = 2, up_padding: int = 2, up_eps: float = 1e-3,
                 operator: str = 'converse', checkpoint_blocks: bool = False) -> None:
        super().__init__()
        self.upscale = upscale
        self.checkpoint_blocks = checkpoint_blocks
        self.factors = upsample_factors(upscale)

        def block():
            return ConverseBlock(num_feat, num_feat, kernel_size, padding, padding_mode, eps, False, operator)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 1)
        self.conv_body = nn.Sequential(*[block() for _ in range(num_block)])
        for i, factor in enumerate(self.factors, start=1):
            self.add_module(f'upconv{i}', block())
            self.add_module(f'up{i}', make_operator(operator, num_feat, up_kernel_size, factor, up_padding,
                                                    padding_mode, up_eps))
        self.conv_hres = block()
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 1, bias=False)
        self.act = nn.GELU()

    def forward(self, x):
        ckpt = self.checkpoint_blocks
        feat = run_blocks(self.conv_body, self.act(apply_layer(self.conv_first, x)), ckpt)
        for i in range(1, len(self.factors) + 1):
            feat = self.act(getattr(self, f'up{i}')(run_blocks([getattr(self, f'upconv{i}')], feat, ckpt)))
        out = apply_layer(self.conv_last, self.act(run_blocks([self.conv_hres], feat, ckpt)))
        if self.upscale == 1:
            return out + x
        return out + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)
