"""The closed form of spec §1 written directly (full complex FFTs), used only to check the production
operator and as the baseline of ``benchmarks/bench_converse2d.py``. Deliberately naive: do not optimise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def psf2otf(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """FFT of the kernel zero-padded to (height, width) and rolled by -(k // 2) in both axes."""
    kh, kw = kernel.shape[-2:]
    padded = torch.zeros(*kernel.shape[:-2], height, width, dtype=kernel.dtype, device=kernel.device)
    padded[..., :kh, :kw] = kernel
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.fft2(padded)


def block_mean(a: torch.Tensor, s: int) -> torch.Tensor:
    blocks = [a[..., i * (a.shape[-2] // s):(i + 1) * (a.shape[-2] // s), j * (a.shape[-1] // s):(j + 1) * (a.shape[-1] // s)]
              for i in range(s) for j in range(s)]
    return torch.stack(blocks, dim=0).mean(dim=0)


def oracle_converse2d(x, weight, lam, scale=1, padding=2, padding_mode='circular'):
    """x (B, C, H, W), weight (1|B, C, k, k), lam broadcastable to (1|B, C, 1, 1)."""
    mode = 'constant' if padding_mode == 'zeros' else padding_mode
    y = F.pad(x, (padding, ) * 4, mode=mode) if padding else x
    s = scale
    sh, sw = y.shape[-2] * s, y.shape[-1] * s
    x0 = F.interpolate(y, scale_factor=s, mode='nearest') if s > 1 else y
    yup = torch.zeros(*y.shape[:-2], sh, sw, dtype=y.dtype, device=y.device)
    yup[..., ::s, ::s] = y
    fk = psf2otf(weight, sh, sw)
    fkc = fk.conj()
    l = fkc * torch.fft.fft2(yup) + lam * torch.fft.fft2(x0)
    num = block_mean(fk * l, s)
    den = block_mean(fk.abs() ** 2, s) + lam
    frac = (num / den).repeat(1, 1, s, s)
    out = torch.fft.ifft2((l - fkc * frac) / lam).real
    if padding:
        c = padding * s
        out = out[..., c:-c, c:-c]
    return out


def oracle_module_forward(module, x):
    """Forward of a Converse2D module through the oracle (same parameters)."""
    lam = torch.sigmoid(module.bias - 9.0) + module.eps
    return oracle_converse2d(x, module.weight, lam, module.scale, module.padding, module.padding_mode)
