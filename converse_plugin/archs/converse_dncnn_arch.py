"""ConverseDnCNN: a DnCNN-like denoiser built from ConverseBlocks (spec §3)."""
from __future__ import annotations

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from converse_plugin.archs.converse_block import ConverseBlock, run_blocks, run_layers


@ARCH_REGISTRY.register()
class ConverseDnCNN(nn.Module):
    """1x1 head, ``num_block`` ConverseBlocks, 1x1 tail; outputs the clean image (no global residual).

    Defaults reproduce the released gray sigma = 25 model (converse_dncnn.pth, 796,353 parameters).
    Set ``num_in_ch = num_out_ch = 3`` for colour. ``residual=True`` adds the input to the output.
    ``checkpoint_blocks=True`` recomputes each block in the backward pass (less memory, same results).

    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, H, W).
    """

    def __init__(self, num_in_ch: int = 1, num_out_ch: int = 1, num_feat: int = 64, num_block: int = 20,
                 kernel_size: int = 7, padding: int = 6, padding_mode: str = 'circular', eps: float = 1e-5,
                 operator: str = 'converse', gated: bool = False, residual: bool = False,
                 checkpoint_blocks: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.checkpoint_blocks = checkpoint_blocks
        if residual and num_in_ch != num_out_ch:
            raise ValueError(f'residual=True needs num_in_ch == num_out_ch, got {num_in_ch} and {num_out_ch}')
        self.m_head = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 1))
        self.m_body = nn.Sequential(*[
            ConverseBlock(num_feat, num_feat, kernel_size, padding, padding_mode, eps, gated, operator)
            for _ in range(num_block)
        ])
        self.m_tail = nn.Sequential(nn.Conv2d(num_feat, num_out_ch, 1))

    def forward(self, x):
        out = run_layers(self.m_tail, run_blocks(self.m_body, run_layers(self.m_head, x), self.checkpoint_blocks))
        return x + out if self.residual else out
