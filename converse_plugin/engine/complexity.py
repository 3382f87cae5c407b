"""Parameters and multiply-adds (MACs) per module type, with mmengine's FlopAnalyzer, FFTs included.

mmengine (like fvcore) counts one multiply-add as one "flop" and, by default, only convolutions,
matrix products, norms and a few resampling ops; it silently skips FFTs and the custom autograd
Function that applies Converse2D's filter, so a Converse2D network would look almost free. Here the
analyzer gets extra handles, under this convention (all counts are real multiply-adds):

* a complex FFT of N points (``aten::fft_fft*``, ``fft_ifft*``, ``_fft_c2c``) costs 5/2 · N · log2 N
  (the classic 5 N log2 N real flops of a radix-2 FFT, halved to count multiply-adds); a real-input or
  real-output transform (``fft_rfft*``, ``fft_irfft*``, ``fft_hfft*``, ``fft_ihfft*``, ``_fft_r2c``,
  ``_fft_c2r``) costs half of that, 5/4 · N · log2 N. N is the number of points of the real or complex
  signal along the transformed dimensions; batch dimensions multiply;
* a matrix product counts batch · n · k · m (with broadcast batch dimensions, which mmengine's own
  handle drops for the second operand); a complex multiplication costs 4 real multiply-adds, so a
  complex ``matmul`` counts 4 per complex multiply-add, and Converse2D's spectrum × filter product counts 4 per complex output element;
* an elementwise product of two complex tensors (``aten::mul``/``mul_``) costs 4 per element;
* ``converse::apply_filter`` (Converse2D's custom operator, opaque to the tracer, traced when gradients are
  on; :func:`analyze` traces without them, where the transforms appear as plain ops) is counted as
  what its forward does: one transform of the padded input (real ``rfft2`` of h·w points for s = 1, a
  complex ``fft2`` of h·w points for s > 1), the complex product on the (s·h) × (s·w/2 + 1) half
  spectrum, and a real ``irfft2`` of s·h · s·w points, per image and channel;
* the kernel-only filter of Converse2D is counted where it is computed in the traced forward (its
  complex matrix products; elementwise ops are skipped as mmengine skips them). Converse2D's inference
  cache is cleared first, so the count is the same for every call.

Categories in the report: ``conv``, ``matmul``/``linear``/... (mmengine's names), ``fft`` and
``complex_mul``.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ['FFT_OPS', 'ComplexityReport', 'fft_macs', 'parse_input_size', 'example_inputs', 'analyze',
           'format_report']

_REAL_FFT = re.compile(r'^aten::(fft_rfft|fft_irfft|fft_hfft|fft_ihfft|_fft_r2c|_fft_c2r)')
FFT_OPS = tuple(f'aten::fft_{kind}{dims}' for kind in ('fft', 'ifft', 'rfft', 'irfft', 'hfft', 'ihfft')
                for dims in ('', '2', 'n')) + ('aten::_fft_r2c', 'aten::_fft_c2r', 'aten::_fft_c2c')
_INVERSE_REAL = ('irfft', 'hfft', '_fft_c2r')  # output is the real signal


def fft_macs(points: int, real: bool) -> float:
    """Multiply-adds of one transform of ``points`` points: 5/2 N log2 N (complex), half for real."""
    if points <= 1:
        return 0.0
    return (1.25 if real else 2.5) * points * math.log2(points)


def _shape(value: Any) -> list[int] | None:
    return value.type().sizes() if value.isCompleteTensor() else None


def _constant(value: Any) -> Any:
    try:
        return value.toIValue()
    except RuntimeError:
        return None


def _is_complex(value: Any) -> bool:
    try:
        return 'Complex' in str(value.type().scalarType())
    except (RuntimeError, AttributeError):
        return False


def _fft_dims(kind: str, inputs: list, ndim: int) -> list[int]:
    """Transformed dimensions of an ``aten::fft_*`` / ``aten::_fft_*`` node."""
    name = kind.split('::')[1]
    if name.startswith('_fft_'):
        dims = _constant(inputs[1])
    elif name.endswith('2'):
        dims = _constant(inputs[2]) if len(inputs) > 2 else None
        dims = dims if dims is not None else [-2, -1]
    elif name.endswith('n'):
        dims = _constant(inputs[2]) if len(inputs) > 2 else None
        dims = dims if dims is not None else list(range(ndim))
    else:  # 1-D: (self, n, dim, norm)
        dim = _constant(inputs[2]) if len(inputs) > 2 else None
        dims = [-1 if dim is None else dim]
    dims = [dims] if isinstance(dims, int) else list(dims)
    return [d % ndim for d in dims]


def fft_flop_jit(inputs: list, outputs: list) -> Counter:
    """mmengine handle for the FFT ops (the node kind is found from the output's producer)."""
    kind = outputs[0].node().kind()
    name = kind.split('::')[1]
    real = bool(_REAL_FFT.match(kind))
    inverse_real = any(name.startswith(p) or name.startswith('fft_' + p) for p in _INVERSE_REAL)
    signal = _shape(outputs[0]) if inverse_real else _shape(inputs[0])
    if signal is None:
        return Counter()
    dims = _fft_dims(kind, inputs, len(signal))
    points = math.prod(signal[d] for d in dims)
    batch = math.prod(signal) // max(points, 1)
    return Counter({'fft': batch * fft_macs(points, real)})


def converse_filter_flop_jit(inputs: list, outputs: list) -> Counter:
    """mmengine handle for ``converse::apply_filter`` (see the module docstring)."""
    y_shape, out_shape = _shape(inputs[0]), _shape(outputs[0])
    if y_shape is None or out_shape is None:
        return Counter()
    b, c, h, w = y_shape
    sh, sw = out_shape[-2:]
    scale = sh // h
    forward = fft_macs(h * w, real=scale == 1)
    inverse = fft_macs(sh * sw, real=True)
    return Counter({'fft': b * c * (forward + inverse), 'complex_mul': 4 * b * c * sh * (sw // 2 + 1)})


def complex_aware_matmul_jit(inputs: list, outputs: list) -> float:
    """Matrix product (n, k) @ (k, m) with broadcast batch dimensions: batch · n · k · m multiply-adds
    (mmengine's own handle ignores the second operand's batch), × 4 when an operand is complex."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    if a is None or b is None:
        return 0
    a = [1] + a if len(a) == 1 else a
    b = b + [1] if len(b) == 1 else b
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    macs = math.prod(batch) * a[-2] * a[-1] * b[-1]
    return 4 * macs if any(_is_complex(v) for v in inputs[:2]) else macs


def complex_mul_jit(inputs: list, outputs: list) -> Counter:
    """Elementwise product of two complex tensors: 4 real multiply-adds per output element (products
    involving a real operand are elementwise scaling and skipped, as mmengine skips them)."""
    shape = _shape(outputs[0])
    if shape is None or not (_is_complex(inputs[0]) and _is_complex(inputs[1])):
        return Counter()
    return Counter({'complex_mul': 4 * math.prod(shape)})


EXTRA_HANDLES = {**{op: fft_flop_jit for op in FFT_OPS},
                 'aten::mul': complex_mul_jit, 'aten::mul_': complex_mul_jit,
                 'converse::apply_filter': converse_filter_flop_jit,
                 'aten::matmul': complex_aware_matmul_jit, 'aten::mm': complex_aware_matmul_jit}


@dataclass
class TypeRow:
    modules: int = 0
    params: int = 0
    macs: Counter = field(default_factory=Counter)


@dataclass
class ComplexityReport:
    """What :func:`analyze` measured. ``by_type`` maps a module class name to its modules' own params
    and MACs (not those of child modules, so the rows add up to the totals)."""
    inputs: list[tuple[int, ...]]
    params: int
    macs: float
    by_operator: Counter
    by_type: dict[str, TypeRow]
    skipped_ops: Counter

    @property
    def fft_macs(self) -> float:
        return self.by_operator.get('fft', 0) + self.by_operator.get('complex_mul', 0)


def parse_input_size(text: str) -> tuple[int, ...]:
    """'1x1x256x256' -> (1, 1, 256, 256)."""
    try:
        size = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        raise ValueError(f'input size must look like BxCxHxW (e.g. 1x3x256x256), got {text!r}')
    return size


def example_inputs(net: nn.Module, size: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """A random input of ``size``; plus a normalised box blur kernel (B, 1, k, k) for networks whose
    ``forward`` takes ``kernel`` (k = ``net.kernel_size``)."""
    import inspect
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    x = torch.rand(*size, device=device)
    if 'kernel' in inspect.signature(net.forward).parameters:
        k = int(getattr(net, 'kernel_size', 7))
        return x, torch.full((size[0], 1, k, k), 1.0 / (k * k), device=device)
    return (x, )


def _clear_converse_caches(net: nn.Module) -> None:
    from converse_plugin.ops import Converse2D
    for module in net.modules():
        if isinstance(module, Converse2D):
            module._cache = None


def analyze(net: nn.Module, inputs: Sequence[torch.Tensor]) -> ComplexityReport:
    """Count parameters and multiply-adds of ``net(*inputs)`` (eval mode, no grad)."""
    from mmengine.analysis import FlopAnalyzer

    was_training = net.training
    net.eval()
    _clear_converse_caches(net)
    try:
        with torch.no_grad():
            analyzer = FlopAnalyzer(net, tuple(inputs)).set_op_handle(**EXTRA_HANDLES)
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
            totals = analyzer.by_module()
            by_operator = analyzer.by_operator()
            per_module = analyzer.by_module_and_operator()
            skipped = analyzer.unsupported_ops()
    finally:
        net.train(was_training)
    by_type: dict[str, TypeRow] = {}
    for name, module in net.named_modules():
        row = by_type.setdefault(type(module).__name__, TypeRow())
        row.modules += 1
        row.params += sum(p.numel() for p in module.parameters(recurse=False))
        own = Counter(per_module.get(name, {}))
        for child_name, _ in module.named_children():
            own.subtract(per_module.get(f'{name}.{child_name}' if name else child_name, {}))
        row.macs.update({k: v for k, v in own.items() if abs(v) >= 0.5})  # float FFT counts
    _clear_converse_caches(net)
    return ComplexityReport(inputs=[tuple(t.shape) for t in inputs],
                            params=sum(p.numel() for p in net.parameters()),
                            macs=float(totals['']), by_operator=Counter(by_operator), by_type=by_type,
                            skipped_ops=Counter(skipped))


def _human(n: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= div:
            return f'{n / div:.3f}{unit}'
    return f'{n:.0f}'


def format_report(report: ComplexityReport, title: str = '') -> str:
    """A Markdown table: one row per module type with params, MACs, FFT MACs and share of the total."""
    lines = [f'## {title}' if title else '', f'input {" + ".join("x".join(map(str, s)) for s in report.inputs)}; '
             f'params {report.params:,}; MACs {_human(report.macs)} ({report.macs:,.0f}), of which FFT '
             f'{_human(report.fft_macs)}', '',
             '| module type | modules | params | MACs | FFT MACs | share |', '|---|---:|---:|---:|---:|---:|']
    rows = sorted(report.by_type.items(), key=lambda kv: -sum(kv[1].macs.values()))
    for name, row in rows:
        macs = sum(row.macs.values())
        if not macs and not row.params:
            continue
        fft = row.macs.get('fft', 0) + row.macs.get('complex_mul', 0)
        share = 100 * macs / report.macs if report.macs else 0.0
        lines.append(f'| {name} | {row.modules} | {row.params:,} | {_human(macs)} | {_human(fft)} | {share:.1f}% |')
    ops = ', '.join(f'{k} {_human(v)}' for k, v in report.by_operator.most_common())
    lines += ['', f'by operator: {ops}']
    if report.skipped_ops:
        skipped = ', '.join(f'{k}×{v}' for k, v in sorted(report.skipped_ops.items()))
        lines.append(f'not counted (elementwise and other ops mmengine skips): {skipped}')
    return '\n'.join(line for line in lines if line is not None)
