"""ConverseNet (blind deblurring, spec §3) and the prior it shares with ConverseUSRNet: a stack of
ConverseBlocks iterated ``num_iter`` times with the same weights."""
from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from converse_plugin.archs.converse_block import ConverseBlock, apply_layer, run_blocks


class ConversePrior(nn.Module):
    """``num_block`` ConverseBlocks in ``m_body``. Shapes: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, num_feat: int = 64, num_block: int = 7, kernel_size: int = 3, padding: int = 2,
                 padding_mode: str = 'circular', eps: float = 1e-5, gated: bool = False,
                 operator: str = 'converse', checkpoint_blocks: bool = False) -> None:
        super().__init__()
        self.checkpoint_blocks = checkpoint_blocks
        self.m_body = nn.Sequential(*[
            ConverseBlock(num_feat, num_feat, kernel_size, padding, padding_mode, eps, gated, operator)
            for _ in range(num_block)
        ])

    def forward(self, x):
        return run_blocks(self.m_body, x, self.checkpoint_blocks)


@ARCH_REGISTRY.register()
class ConverseNet(nn.Module):
    """Blind deblurring: conv1 (1x1) -> ``num_iter`` x the shared prior -> conv2 (1x1); no global residual.

    Defaults reproduce conversenet.pth (243,267 parameters). ``checkpoint_blocks=True`` recomputes each
    block in the backward pass (less memory, same results).
    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, H, W).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 7,
                 num_iter: int = 5, kernel_size: int = 3, padding: int = 2, padding_mode: str = 'circular',
                 eps: float = 1e-5, operator: str = 'converse', checkpoint_blocks: bool = False) -> None:
        super().__init__()
        if num_iter < 1:
            raise ValueError(f'num_iter must be >= 1, got {num_iter}')
        self.num_iter = num_iter
        self.conv1 = nn.Conv2d(num_in_ch, num_feat, 1)
        self.p = ConversePrior(num_feat, num_block, kernel_size, padding, padding_mode, eps, False, operator,
                               checkpoint_blocks)
        self.conv2 = nn.Conv2d(num_feat, num_out_ch, 1)

    def forward(self, x):
        x = apply_layer(self.conv1, x)
        for _ in range(self.num_iter):
            x = self.p(x)
        return apply_layer(self.conv2, x)
