"""ConverseUSRNet (non-blind deblurring, spec §3): a closed-form data step ``d`` that uses the given blur
kernel (per sample), alternated ``num_iter`` times with the ConverseBlock prior ``p`` of ConverseNet."""
from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from converse_plugin.archs.converse_block import apply_layer
from converse_plugin.archs.conversenet_arch import ConversePrior
from converse_plugin.ops import converse2d


class KernelNet(nn.Module):
    """Flattened k x k blur kernel -> (B, kernel_feat, k, k) features: fc1, GELU, fc2, GELU, fc3."""

    def __init__(self, kernel_size: int = 7, hidden: int = 64, kernel_feat: int = 16) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.kernel_feat = kernel_feat
        self.fc1 = nn.Linear(kernel_size * kernel_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, kernel_feat * kernel_size * kernel_size)
        self.act = nn.GELU()

    def forward(self, kernel: torch.Tensor) -> torch.Tensor:
        b = kernel.shape[0]
        out = self.fc3(self.act(self.fc2(self.act(self.fc1(kernel.reshape(b, -1))))))
        return out.view(b, self.kernel_feat, self.kernel_size, self.kernel_size)


class DataStep(nn.Module):
    """Closed-form data step: Converse2D's solution with an external per-sample kernel bank, the current
    features as both Y and X0, lam = sigmoid(alpha - 9) + eps, no padding (circular grid).

    ``impl`` and ``compute_dtype`` select the formulation as on :class:`~converse_plugin.ops.Converse2D`
    (see :func:`converse_plugin.ops.export.export_mode`).

    Shapes: x (B, C, H, W), kernel (B, C, k, k) -> (B, C, sf*H, sf*W).
    """

    def __init__(self, num_feat: int = 64, eps: float = 1e-3) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, num_feat, 1, 1))
        self.eps = eps
        self.impl: str | None = None
        self.compute_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, kernel: torch.Tensor, sf: int = 1) -> torch.Tensor:
        lam = torch.sigmoid(self.alpha - 9.0) + self.eps
        return converse2d(x, kernel, lam, scale=sf, padding=0, impl=self.impl, compute_dtype=self.compute_dtype)


@ARCH_REGISTRY.register()
class ConverseUSRNet(nn.Module):
    """Non-blind deblurring (and SR with ``sf`` > 1): unfolded data step + ConverseBlock prior.

        x = conv1(x); x = p(d(x, k_0, sf)); for i = 1..num_iter-1: x = p(d(x, k_i, 1)); return conv2(x)

    with k_i = convs[i](kernelnet(kernel)) a per-sample, per-channel kernel bank. Defaults reproduce
    converse_usrnet.pth (307,987 parameters). ``checkpoint_blocks=True`` recomputes each prior block in the
    backward pass (less memory, same results).

    Shapes: x (B, num_in_ch, H, W); kernel (B, 1, k, k), (B, k, k) or (k, k) (shared by the batch);
    output (B, num_out_ch, sf*H, sf*W).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 7,
                 num_iter: int = 5, kernel_size: int = 7, kernel_feat: int = 16, kernel_hidden: int = 64,
                 prior_kernel_size: int = 3, padding: int = 2, padding_mode: str = 'circular',
                 eps: float = 1e-5, data_eps: float = 1e-3, operator: str = 'converse',
                 checkpoint_blocks: bool = False) -> None:
        super().__init__()
        if num_iter < 1:
            raise ValueError(f'num_iter must be >= 1, got {num_iter}')
        self.num_iter = num_iter
        self.kernel_size = kernel_size
        self.conv1 = nn.Conv2d(num_in_ch, num_feat, 1)
        self.d = DataStep(num_feat, data_eps)
        self.p = ConversePrior(num_feat, num_block, prior_kernel_size, padding, padding_mode, eps, True, operator,
                               checkpoint_blocks)
        self.conv2 = nn.Conv2d(num_feat, num_out_ch, 1)
        self.kernelnet = KernelNet(kernel_size, kernel_hidden, kernel_feat)
        self.convs = nn.ModuleList([nn.Conv2d(kernel_feat, num_feat, 1) for _ in range(num_iter)])

    def _check_kernel(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if kernel.dim() == 2:
            kernel = kernel.unsqueeze(0).expand(x.shape[0], k, k) if kernel.shape == (k, k) else kernel
        if kernel.dim() == 4 and kernel.shape[1] == 1:
            kernel = kernel[:, 0]
        if kernel.dim() != 3 or kernel.shape[-2:] != (k, k) or kernel.shape[0] not in (1, x.shape[0]):
            raise ValueError(f'ConverseUSRNet expects kernels of shape (B, 1, {k}, {k}), (B, {k}, {k}) or '
                             f'({k}, {k}) with B = {x.shape[0]}, got {tuple(kernel.shape)}')
        return kernel.expand(x.shape[0], k, k).to(dtype=x.dtype)

    def forward(self, x: torch.Tensor, kernel: torch.Tensor, sf: int = 1) -> torch.Tensor:
        kernel = self._check_kernel(x, kernel)
        kfeat = self.kernelnet(kernel)
        x = apply_layer(self.conv1, x)
        for i in range(self.num_iter):
            x = self.p(self.d(x, apply_layer(self.convs[i], kfeat), sf if i == 0 else 1))
        return apply_layer(self.conv2, x)
