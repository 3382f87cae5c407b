"""Blocks shared by the ConverseNet families: LayerNorm2d, the operator factory, ConverseBlock."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from converse_plugin.ops import Converse2D
from converse_plugin.ops.functional import from_pairs, pairs_layout_pays, to_pairs

OPERATORS = ('converse', 'conv', 'convt')


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels: (x - mean) / sqrt(var + eps) * weight + bias.

    Shapes: (B, C, H, W) -> (B, C, H, W). Biased variance; ``weight`` ones, ``bias`` zeros, shape (C,).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two plain channel means: torch.var_mean over dim 1 of NCHW is ~3x slower on the CPU
        d = x - x.mean(1, keepdim=True)
        inv_std = torch.rsqrt(d.square().mean(1, keepdim=True).add_(self.eps))
        weight, bias = self.weight.view(1, -1, 1, 1), self.bias.view(1, -1, 1, 1)
        if torch.is_grad_enabled() and (d.requires_grad or weight.requires_grad or bias.requires_grad):
            return torch.addcmul(bias, d * inv_std, weight)
        return d.mul_(inv_std).mul_(weight).add_(bias)  # inference: reuse d (no fresh buffers)


class DepthwiseConvUp(nn.Module):
    """The 'Conv-' ablation: nearest upsampling by ``scale`` (if > 1), then a depthwise k x k Conv2d
    with 'same' output size and the given padding mode. Parameters ``weight`` (C, 1, k, k), ``bias`` (C,).
    Shapes: (B, C, H, W) -> (B, C, s*H, s*W)."""

    def __init__(self, channels: int, kernel_size: int, scale: int = 1, padding_mode: str = 'zeros') -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding='same', groups=channels,
                              padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode='nearest')
        return self.conv(x)


class DepthwiseConvTranspose(nn.Module):
    """The 'ConvT-' ablation: a depthwise ConvTranspose2d (stride ``scale``), centre-cropped to exactly
    (s*H, s*W). Shapes: (B, C, H, W) -> (B, C, s*H, s*W)."""

    def __init__(self, channels: int, kernel_size: int, scale: int = 1) -> None:
        super().__init__()
        self.scale = scale
        self.kernel_size = kernel_size
        self.convt = nn.ConvTranspose2d(channels, channels, kernel_size, stride=scale, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convt(x)  # (H - 1) s + k
        target_h, target_w = x.shape[-2] * self.scale, x.shape[-1] * self.scale
        extra = self.kernel_size - self.scale  # may be negative when k < s
        if extra < 0:
            out = F.pad(out, (0, -extra, 0, -extra))
            extra = 0
        top = extra // 2
        return out[..., top:top + target_h, top:top + target_w]


def make_operator(operator: str, channels: int, kernel_size: int, scale: int = 1, padding: int = 2,
                  padding_mode: str = 'circular', eps: float = 1e-5) -> nn.Module:
    """Build the depthwise (up)sampling operator named by ``operator``: 'converse' | 'conv' | 'convt'.

    All three map (B, C, H, W) -> (B, C, s*H, s*W) and have C*k*k + C parameters, so the paper's
    Conv-/ConvT- ablations are one option away.
    """
    if operator == 'converse':
        return Converse2D(channels, channels, kernel_size, scale=scale, padding=padding,
                          padding_mode=padding_mode, eps=eps)
    if operator == 'conv':
        return DepthwiseConvUp(channels, kernel_size, scale, padding_mode=padding_mode)
    if operator == 'convt':
        return DepthwiseConvTranspose(channels, kernel_size, scale)
    raise ValueError(f'operator must be one of {OPERATORS}, got {operator!r}')


class ConverseBlock(nn.Module):
    """The reverse-convolution block (spec §2): two pre-norm residual branches, expansion 2.

        x = x + a1 * conv1(x),  conv1 = [LN, 1x1 C->2C, GELU, Converse2D(2C, k, s=1), GELU, 1x1 2C->C]
        x = x + a2 * conv2(x),  conv2 = [LN, 1x1 C->2C, GELU, 1x1 2C->C]

    a1 = a2 = 1 unless ``gated``, in which case they are learnable ``alpha1``/``alpha2`` (1, C, 1, 1),
    initialised at 0. ``operator`` swaps Converse2D for a depthwise Conv2d or ConvTranspose2d.

    Shapes: (B, C, H, W) -> (B, C, H, W).

    Example:
        >>> block = ConverseBlock(16, kernel_size=5, padding=4, padding_mode='replicate')
        >>> block(torch.rand(2, 16, 12, 12)).shape
        torch.Size([2, 16, 12, 12])
    """

    def __init__(self, in_channels: int = 64, out_channels: int | None = None, kernel_size: int = 3,
                 padding: int = 2, padding_mode: str = 'circular', eps: float = 1e-5, gated: bool = False,
                 operator: str = 'converse', expansion: int = 2) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if out_channels != in_channels:
            raise ValueError(f'ConverseBlock is residual: out_channels ({out_channels}) must equal '
                             f'in_channels ({in_channels})')
        hidden = expansion * in_channels
        self.conv1 = nn.Sequential(
            LayerNorm2d(in_channels),
            nn.Conv2d(in_channels, hidden, 1),
            nn.GELU(),
            make_operator(operator, hidden, kernel_size, 1, padding, padding_mode, eps),
            nn.GELU(),
            nn.Conv2d(hidden, in_channels, 1),
        )
        self.conv2 = nn.Sequential(
            LayerNorm2d(in_channels),
            nn.Conv2d(in_channels, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, in_channels, 1),
        )
        self.gated = gated
        if gated:
            self.alpha1 = nn.Parameter(torch.zeros(1, in_channels, 1, 1))
            self.alpha2 = nn.Parameter(torch.zeros(1, in_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if torch.compiler.is_compiling():
            return self._forward_compiled(x)
        if not torch.is_grad_enabled():
            return self._forward_inference(x)
        if self.gated:
            x = x + self.alpha1 * self.conv1(x)
            return x + self.alpha2 * self.conv2(x)
        x = x + self.conv1(x)
        return x + self.conv2(x)

    def _forward_compiled(self, x: torch.Tensor, pairs: bool = False) -> torch.Tensor:
        """The same function for torch.compile: the 1x1 convolutions as matrix products over the channels,
        which inductor turns into one GEMM each with the normalisation, GELUs, gates and residual sums fused
        around them; a convolution stays an opaque call of a dozen aten operations forward and backward.
        ``pairs``: x is the pair layout of :func:`converse_plugin.ops.functional.to_pairs`."""
        out = x
        for branch, alpha in ((self.conv1, 'alpha1'), (self.conv2, 'alpha2')):
            h = run_layers(branch, out, pairs)
            out = out + (getattr(self, alpha) * h if self.gated else h)
        return out

    def takes_pairs(self) -> bool:
        """Whether :meth:`forward_pairs` applies: every layer is per pixel or a Converse2D that takes pairs,
        and no hook on the block or inside it would see the pair layout."""
        return all(_per_pixel(m) or (isinstance(m, Converse2D) and m.takes_pairs()) for b in (self.conv1, self.conv2)
                   for m in b) and not _has_hooks(self)

    def forward_pairs(self, x: torch.Tensor) -> torch.Tensor:
        """The block on the interleaved pair layout (m, C, H, 2 W) of
        :func:`converse_plugin.ops.functional.to_pairs` (the CPU's fastest form under torch.compile, used by
        :func:`run_blocks`). Only where :meth:`takes_pairs`."""
        return self._forward_compiled(x, pairs=True)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same function without autograd: GELUs that follow a 1x1 convolution and the residual sums
        work in place on the branch's fresh buffers (the block's input is never modified). On the CPU a
        fresh full-size buffer costs about as much as the GELU itself."""
        for branch, alpha in ((self.conv1, 'alpha1'), (self.conv2, 'alpha2')):
            h = x
            for i, layer in enumerate(branch):
                if isinstance(layer, nn.GELU) and isinstance(branch[i - 1], nn.Conv2d):
                    h = torch.ops.aten.gelu_(h, approximate=layer.approximate)
                else:
                    h = layer(h)
            if self.gated:
                h = h.mul_(getattr(self, alpha))
            x = h.add_(x)
        return x


def apply_layer(layer: nn.Module, x: torch.Tensor, pairs: bool = False) -> torch.Tensor:
    """``layer(x)``, except that under torch.compile a 1x1 convolution is :func:`pointwise_conv`. No
    convolution should reach inductor's graph on the CPU: one there switches on its channels-last layout
    optimisation for every tensor downstream of it (the residual stream, LayerNorms) but not for the
    batched products, and the fused kernels between them then transpose (fused kernels 758 -> 642 ms of a
    ConverseDnCNN step). ``pairs``: x is the pair layout, and a Converse2D runs its ``forward_pairs``."""
    if pairs and isinstance(layer, Converse2D):
        return layer.forward_pairs(x)
    return pointwise_conv(layer, x) if torch.compiler.is_compiling() and _is_pointwise(layer) else layer(x)


def run_layers(layers: nn.Sequential, x: torch.Tensor, pairs: bool = False) -> torch.Tensor:
    """``layers(x)``; under torch.compile each layer with :func:`apply_layer` (in eager mode the Sequential
    itself runs, so forward hooks on it still fire)."""
    if not torch.compiler.is_compiling():
        return layers(x)
    for layer in layers:
        x = apply_layer(layer, x, pairs)
    return x


def _is_pointwise(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.groups == 1 and layer.padding in ((0, 0), 'valid'))


def _per_pixel(layer: nn.Module) -> bool:
    """Whether ``layer`` maps each pixel on its own (any spatial layout of a batch is the same to it)."""
    return _is_pointwise(layer) or type(layer) in (LayerNorm2d, nn.GELU, nn.Identity)


def _has_hooks(module: nn.Module) -> bool:
    """Whether any module hook (forward or backward; on ``module``, inside it, or global) would see its
    tensors."""
    from torch.nn.modules import module as torch_module
    if (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
            or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in module.modules())


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 Conv2d as a matrix product over the channels: (B, C_in, H, W) -> (B, C_out, H, W). Contiguous
    layouts throughout (a channels-last ``F.linear`` leaves views whose symbolic strides inductor cannot
    order under dynamic shapes). A batched product with the weight expanded, not a broadcasting ``matmul``:
    inductor turns the latter into one (B*H*W, C) GEMM whose channels-last result every following fused
    kernel then reads and writes transposed (a ConverseDnCNN training step ~7% slower on the CPU)."""
    out = torch.bmm(conv.weight.flatten(1).expand(x.shape[0], -1, -1), x.flatten(2)).unflatten(2, x.shape[-2:])
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


# The interleavings at both ends of a pair-layout run are gathers that inductor does not vectorise (and fuses
# into the LayerNorm that reads them three times); a run must be long enough to pay for them. Measured on the
# CPU, compiled training steps: ConverseDnCNN (one run of 20 blocks, B4 64^2) ~3% faster; ConverseMSRResNet
# (B2 16^2) about even with its 16-block body paired, ~20% slower with its single-block runs paired too.
PAIRS_MIN_BLOCKS = 4


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, checkpoint_blocks: bool = False) -> torch.Tensor:
    """Apply ``blocks`` in order. ``checkpoint_blocks``: when gradients are on, keep only each block's input
    and recompute its activations in the backward pass (``torch.utils.checkpoint``, ``use_reentrant=False``):
    the same outputs and gradients for less memory and about one more forward pass of time."""
    recompute = checkpoint_blocks and torch.is_grad_enabled()
    blocks = list(blocks)
    # under torch.compile on the CPU, a run of PAIRS_MIN_BLOCKS or more ConverseBlocks works on the pair
    # layout (two samples per complex FFT, no packing per layer; see converse_plugin.ops.library), with one
    # interleaving at each end
    pairs = (len(blocks) >= PAIRS_MIN_BLOCKS and pairs_layout_pays(x)
             and all(isinstance(b, ConverseBlock) and b.takes_pairs() for b in blocks))
    if pairs:
        x = to_pairs(x)
    for block in blocks:
        fn = block.forward_pairs if pairs else block
        x = checkpoint(fn, x, use_reentrant=False) if recompute else fn(x)
    return from_pairs(x) if pairs else x
