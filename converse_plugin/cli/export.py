"""``basicsr export``: a model to ONNX (checked with onnxruntime), safetensors or a plain ``.pth``.

    basicsr export --model converse_dncnn --format onnx -o converse_dncnn.onnx
    basicsr export --model converse_usrnet --format onnx -o usrnet.onnx          # inputs: input, kernel
    basicsr export --model net_g_latest.pth --arch ConverseDnCNN --arch-kwargs '{"num_feat": 16}' \\
        --format safetensors -o net.safetensors

ONNX: the graph takes ``input`` (1, C, H, W) with any H and W (and ``kernel`` (1, 1, k, k) for
ConverseUSRNet) and returns ``output``. Converse2D is exported through its real-arithmetic formulation
(:mod:`converse_plugin.ops.export`): the FFTs become ONNX ``DFT`` nodes (opset >= 20). After
writing, the file is run with onnxruntime on random inputs of sizes other than the traced one and
compared with PyTorch; the maximum absolute difference is printed, and the command fails when it
exceeds ``--atol`` (default 1e-4). safetensors/pth: the state dict, plus (safetensors) the architecture
and its arguments in the file's metadata, so ``basicsr infer --model FILE`` needs no ``--arch``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
from converse_plugin.io.model_files import add_model_arguments

FORMATS = ('onnx', 'safetensors', 'pth')


class ExportError(RuntimeError):
    """A model that cannot be exported, with the operator and the reason."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='basicsr export', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument('--format', choices=FORMATS, default='onnx', help='output format (default: onnx)')
    p.add_argument('-o', '--output', required=True, help='output file')
    p.add_argument('--opset', type=int, default=20, help='ONNX opset (>= 20 for DFT with dynamic sizes; default 20)')
    p.add_argument('--trace-size', type=int, default=48, help='input height/width used for tracing (default 48)')
    p.add_argument('--check-sizes', default='40x56,33x47', help='H x W sizes checked with onnxruntime')
    p.add_argument('--atol', type=float, default=1e-4, help='largest accepted |onnxruntime - PyTorch| (default 1e-4)')
    p.add_argument('--scale', type=int, default=1, help='sf baked into a ConverseUSRNet export (default 1)')
    p.add_argument('--no-check', action='store_true', help='skip the onnxruntime comparison')
    p.add_argument('--fft-dtype', choices=('float64', 'float32'), default='float64',
                   help='precision of the transforms inside Converse2D (default float64: matches PyTorch to '
                        '~1e-5; float32 is faster in onnxruntime but may differ by ~3e-4)')
    return p


def _example_inputs(loaded, size: tuple[int, int], scale: int, seed: int = 0) -> tuple:
    import torch

    from converse_plugin.io.model_files import takes_kernel
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, loaded.in_channels, *size, generator=gen)
    if takes_kernel(loaded.net):
        k = int(getattr(loaded.net, 'kernel_size', 7))
        kernel = torch.rand(1, 1, k, k, generator=gen)
        return x, kernel / kernel.sum()
    return (x, )


def _exportable(loaded, scale: int):
    import torch
    from torch import nn

    from converse_plugin.io.model_files import takes_kernel
    net = loaded.net
    if not takes_kernel(net):
        return net

    class WithKernel(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:  # noqa: A002
            return self.inner(input, kernel, scale)

    return WithKernel(net).eval()


def _explain(err: BaseException, arch: str) -> ExportError:
    """An ExportError naming the operator that failed and why (from the exporter's message)."""
    text = str(err)
    op = re.search(r'(torch\.ops\.[\w.]+|aten::\w+|aten\.[\w.]+)', text)
    why = 'complex tensors, which ONNX does not have' if 'complex' in text.lower() else None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith('<class') or 'Error' in ln), lines[0] if lines else '')
    where = f'operator {op.group(1)}' if op else 'an operator'
    return ExportError(f'cannot export {arch} to ONNX: {where} has no ONNX translation'
                       + (f' ({why})' if why else '') + f'. Exporter said: {detail[:400]}')


def export_onnx(loaded, path: str, opset: int = 20, trace_size: int = 48, scale: int = 1,
                fft_dtype: str = 'float64') -> None:
    """Write ``loaded.net`` to ``path`` as ONNX with dynamic height and width (Converse2D computed in
    ``fft_dtype``: 'float64' or 'float32').

    Raises:
        ExportError: an operator of the network cannot be exported (named, with the reason).
    """
    import onnx
    import torch

    from converse_plugin.ops.export import export_mode
    if opset < 20:
        raise ExportError(f'--opset {opset}: Converse2D needs ONNX DFT with dynamic sizes (opset >= 20)')
    module = _exportable(loaded, scale)
    args = _example_inputs(loaded, (trace_size, trace_size), scale)
    h, w = torch.export.Dim('height', min=16, max=16384), torch.export.Dim('width', min=16, max=16384)
    dynamic = ({2: h, 3: w}, ) + ((None, ) if len(args) > 1 else ())
    names = ['input', 'kernel'][:len(args)]
    os.makedirs(os.path.dirname(os.path.abspath(path)) or '.', exist_ok=True)
    try:
        with export_mode(getattr(torch, fft_dtype)), torch.no_grad():
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                                        input_names=names, output_names=['output'], verbose=False)
    except Exception as err:  # the exporter raises many types; name the operator that failed
        raise _explain(err, loaded.arch) from err
    model = program.model_proto
    # The exporter annotates some DFT outputs with symbolic shapes that onnxruntime's memory planner
    # rejects ("Shape mismatch attempting to re-use buffer"); intermediate shapes are optional in ONNX,
    # and onnxruntime infers them itself when they are absent.
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, path)


def check_onnx(loaded, path: str, sizes: Sequence[tuple[int, int]], scale: int = 1) -> float:
    """Largest |onnxruntime - PyTorch| over random inputs of ``sizes`` (PyTorch: the normal Converse2D path)."""
    import onnxruntime as ort
    import torch
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    module = _exportable(loaded, scale)
    worst = 0.0
    for i, size in enumerate(sizes):
        args = _example_inputs(loaded, size, scale, seed=i + 1)
        with torch.no_grad():
            ref = module(*args).numpy()
        got = sess.run(None, {inp.name: a.numpy() for inp, a in zip(sess.get_inputs(), args)})[0]
        if got.shape != ref.shape:
            raise ExportError(f'{path}: onnxruntime returned shape {got.shape} for input {tuple(args[0].shape)}, '
                              f'PyTorch {ref.shape}')
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    try:
        sizes = [tuple(int(v) for v in item.lower().split('x')) for item in text.split(',') if item.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) < 16 for s in sizes):
        raise ValueError(f'--check-sizes {text!r}: expected HxW[,HxW...] with H, W >= 16, e.g. 40x56,33x47')
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    import torch

    from converse_plugin.io.checkpoint import save_state_dict_file
    from converse_plugin.io.model_files import parse_arch_kwargs, resolve_model
    suffix = {'safetensors': '.safetensors', 'pth': '.pth'}.get(args.format)
    if suffix and not args.output.endswith(suffix):
        print(f'basicsr export: error: -o {args.output}: a {args.format} file must end in {suffix}', file=sys.stderr)
        return 2
    try:
        sizes = _parse_sizes(args.check_sizes)
        loaded = resolve_model(args.model, args.arch, parse_arch_kwargs(args.arch_kwargs), args.zoo_dir)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f'basicsr export: error: {err}', file=sys.stderr)
        return 2
    if args.format != 'onnx':
        meta = {'arch': loaded.arch, 'arch_kwargs': json.dumps(loaded.arch_kwargs), 'source': loaded.checkpoint}
        path = args.output
        save_state_dict_file(loaded.net.state_dict(), path, metadata=meta)
        print(f'wrote {path} ({args.format}, {len(loaded.net.state_dict())} tensors, {loaded.arch})')
        return 0
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())))
    try:
        export_onnx(loaded, args.output, args.opset, args.trace_size, args.scale, args.fft_dtype)
        print(f'wrote {args.output} (ONNX opset {args.opset}, {loaded.arch}, dynamic height and width)')
        if args.no_check:
            return 0
        diff = check_onnx(loaded, args.output, sizes, args.scale)
    except ExportError as err:
        print(f'basicsr export: error: {err}', file=sys.stderr)
        return 1
    ok = diff <= args.atol
    print(f'onnxruntime vs PyTorch on {", ".join(f"{h}x{w}" for h, w in sizes)}: max abs diff {diff:.3e} '
          f'({"ok" if ok else "FAILED"}, tolerance {args.atol:g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
