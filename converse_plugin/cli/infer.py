"""``basicsr infer``: restore an image or a folder of images with a released or a trained model.

    basicsr infer --model converse_dncnn -i noisy/ -o restored/
    basicsr infer --model converse_usrnet --kernel kernel_1.npy -i blurred/ -o restored/
    basicsr infer --model converse_srresnet -i lr/ -o sr/ --scale 4
    basicsr infer --model my_net.pth --arch ConverseDnCNN --arch-kwargs '{"num_feat": 16, "num_block": 2}' -i x.png -o out/

``--model`` is a zoo name (converse_dncnn, converse_srresnet, conversenet, converse_usrnet, dncnn; the
checkpoint comes from ``--zoo-dir``, else ``$CONVERSE_ZOO_DIR``, else ``~/.cache/converse_plugin/zoo``) or
a checkpoint file (``.pth`` or ``.safetensors``) with ``--arch``. The inputs are the degraded images
themselves (noisy, blurred or low-resolution): nothing is added to them. Reads PNG, JPEG, BMP and TIFF,
gray or colour, 8 or 16 bit, and writes each result to ``-o`` under the same name with the input's bit
depth (JPEG inputs are written as PNG). A gray model restores colour images channel by channel; a colour
model restores a gray image as three equal channels. Images larger than ``--tile`` are restored in
overlapping tiles, so memory stays bounded. Files that cannot be read or restored are reported and
skipped; the exit status is 1 only when no image was restored.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np
from converse_plugin.engine.allocator import add_cpu_allocator_argument, setup_cpu_allocator
from converse_plugin.errors import first_line
from converse_plugin.io.model_files import add_model_arguments

JPEG_EXTENSIONS = ('.jpg', '.jpeg')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='basicsr infer', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument('-i', '--input', required=True, help='image file or folder of images')
    p.add_argument('-o', '--output', required=True, help='output folder')
    p.add_argument('--sigma', type=float, default=None,
                   help='noise level (0-255) for models that take one; the released denoisers are trained for '
                        'one level (sigma 25) and take none: for them it is only checked, with a warning')
    p.add_argument('--kernel', default=None,
                   help='blur kernel for non-blind deblurring (ConverseUSRNet): .npy/.npz/.mat or a gray image')
    p.add_argument('--kernel-index', type=int, default=0, help='which kernel of a file holding several (default 0)')
    p.add_argument('--scale', type=int, default=None,
                   help='upscaling factor: checked against a super-resolution model; sf of ConverseUSRNet')
    p.add_argument('--tile', type=int, default=512, help='tile size in input pixels; 0: whole images (default 512)')
    p.add_argument('--tile-overlap', type=int, default=32, help='overlap of neighbouring tiles (default 32)')
    p.add_argument('--device', default='auto', help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    add_cpu_allocator_argument(p)
    p.add_argument('--suffix', default='', help='appended to each output file name before the extension')
    return p


def load_kernel(path: str, index: int, size: int):
    """The blur kernel of ``path`` as a (1, 1, k, k) float32 tensor summing to 1."""
    import torch

    from converse_plugin.data.kernels import check_kernel, load_kernels
    from converse_plugin.io.images import IMAGE_EXTENSIONS, read_image
    if path.lower().endswith(IMAGE_EXTENSIONS):
        img = read_image(path)
        kernels = [check_kernel(img.data if img.is_gray else img.data.mean(-1), path)]
    else:
        kernels = load_kernels(path)
    if not 0 <= index < len(kernels):
        raise ValueError(f'--kernel {path}: holds {len(kernels)} kernel(s); --kernel-index {index} is out of range')
    k = np.asarray(kernels[index], dtype=np.float64)
    if k.shape != (size, size):
        raise ValueError(f'--kernel {path}: kernel {index} is {k.shape[0]}x{k.shape[1]}, the model expects '
                         f'{size}x{size}')
    if (k < 0).any() or k.sum() <= 0:
        raise ValueError(f'--kernel {path}: a blur kernel must be non-negative with a positive sum')
    return torch.from_numpy(k / k.sum()).float()[None, None]


def _output_path(out_dir: str, src: str, suffix: str) -> str:
    stem, ext = os.path.splitext(os.path.basename(src))
    ext = '.png' if ext.lower() in JPEG_EXTENSIONS else ext
    return os.path.join(out_dir, f'{stem}{suffix}{ext}')


def _pick_device(name: str):
    import torch
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available here')
    return device


class Restorer:
    """Everything fixed for a run: the model, its device and extra inputs, the tiling."""

    def __init__(self, loaded, device, scale: int, kernel=None, sigma: float | None = None,
                 tile: int = 512, overlap: int = 32) -> None:
        self.loaded, self.device, self.scale = loaded, device, scale
        self.net = loaded.net.to(device)
        self.tile, self.overlap = tile, overlap
        import inspect
        params = inspect.signature(self.net.forward).parameters
        self.kwargs = {}
        if kernel is not None:
            self.kwargs['kernel'] = kernel.to(device)
        if 'sf' in params:
            self.kwargs['sf'] = scale
        if sigma is not None and 'sigma' in params:
            self.kwargs['sigma'] = sigma / 255.0

    def _forward(self, x):
        import torch
        with torch.no_grad():
            return self.net(x.to(self.device), **self.kwargs).float().cpu()

    def restore(self, img: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, 3) float in [0, 1] -> the restored image, same layout, scale times larger."""
        import torch

        from converse_plugin.models.tiling import tiled_forward
        in_ch, out_ch = self.loaded.in_channels, self.loaded.out_channels
        gray = img.ndim == 2
        t = torch.from_numpy(img)
        if gray:
            x = t[None, None]  # (1, 1, H, W)
            if in_ch == 3:
                x = x.expand(1, 3, *x.shape[-2:])
        else:
            x = t.permute(2, 0, 1)[None]  # (1, 3, H, W)
            if in_ch == 1:
                x = x.permute(1, 0, 2, 3)  # the channels as a batch of gray images
        if x.shape[1] != in_ch:
            raise ValueError(f'the model takes {in_ch} channels; cannot feed a {"gray" if gray else "colour"} image')
        out = tiled_forward(self._forward, x.contiguous(), self.tile, self.overlap, self.scale)
        if in_ch == 1 and not gray:
            out = out.permute(1, 0, 2, 3)  # back to (1, 3 * out_ch, sH, sW)
        out = out[0]
        if gray and out.shape[0] == 3:
            return out.mean(0).numpy()
        return out[0].numpy() if out.shape[0] == 1 else out.permute(1, 2, 0).numpy()


def _setup(args) -> tuple:
    """Model, device, scale, kernel; raises ValueError/FileNotFoundError with a message for the user."""
    from converse_plugin.io.model_files import model_scale, parse_arch_kwargs, resolve_model, takes_kernel
    loaded = resolve_model(args.model, args.arch, parse_arch_kwargs(args.arch_kwargs), args.zoo_dir)
    net = loaded.net
    fixed = model_scale(net)
    if args.scale is not None and args.scale < 1:
        raise ValueError(f'--scale must be >= 1, got {args.scale}')
    if fixed is None:
        scale = args.scale or 1
    elif args.scale is not None and args.scale != fixed:
        raise ValueError(f'--scale {args.scale}: the model {loaded.name} ({loaded.arch}) upscales by {fixed}')
    else:
        scale = fixed
    kernel = None
    if takes_kernel(net):
        if not args.kernel:
            raise ValueError(f'{loaded.name} ({loaded.arch}) is a non-blind deblurring model: give the blur kernel '
                             'with --kernel FILE (.npy, .npz, .mat or a gray image)')
        kernel = load_kernel(args.kernel, args.kernel_index, int(getattr(net, 'kernel_size', 7)))
    elif args.kernel:
        raise ValueError(f'--kernel: {loaded.name} ({loaded.arch}) does not take a blur kernel (it is blind or '
                         'not a deblurring model)')
    notes = []
    if args.sigma is not None:
        import inspect
        if 'sigma' not in inspect.signature(net.forward).parameters:
            if loaded.trained_sigma is not None and abs(args.sigma - loaded.trained_sigma) > 1e-6:
                notes.append(f'warning: {loaded.name} was trained for noise sigma {loaded.trained_sigma:g} and takes '
                             f'no noise level; images with sigma {args.sigma:g} may be restored poorly')
            elif loaded.trained_sigma is None:
                notes.append(f'note: {loaded.name} takes no noise level; --sigma is ignored')
    if args.tile < 0 or args.tile_overlap < 0 or (args.tile and args.tile_overlap >= args.tile):
        raise ValueError(f'--tile {args.tile} / --tile-overlap {args.tile_overlap}: need tile >= 0 and '
                         '0 <= overlap < tile')
    return loaded, scale, kernel, notes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from tqdm import tqdm

    from converse_plugin.io.images import list_image_files, read_image, write_image
    try:
        files = list_image_files(args.input)
        device = _pick_device(args.device)
        loaded, scale, kernel, notes = _setup(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f'basicsr infer: error: {err}', file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    setup_cpu_allocator(args.cpu_allocator, '--cpu-allocator', device, lambda line: None)
    restorer = Restorer(loaded, device, scale, kernel, args.sigma, args.tile, args.tile_overlap)
    os.makedirs(args.output, exist_ok=True)
    print(f'{loaded.name} ({loaded.arch}) on {device}, scale {scale}, {len(files)} image(s) -> {args.output}',
          file=sys.stderr)
    done, failed = [], []
    for path in tqdm(files, desc='infer', unit='img', file=sys.stderr, dynamic_ncols=True):
        try:
            img = read_image(path)
            out = restorer.restore(img.data)
            target = _output_path(args.output, path, args.suffix)
            write_image(target, out, img.bits)
            done.append(target)
        except (ValueError, OSError, RuntimeError) as err:
            text = first_line(err, type(err).__name__)
            if 'out of memory' in text:
                text += ' (use a smaller --tile)'
            failed.append((path, text))
            tqdm.write(f'skipped {path}: {text}', file=sys.stderr)
    print(f'restored {len(done)} of {len(files)} image(s) into {args.output}'
          + (f'; skipped {len(failed)}:' if failed else ''), file=sys.stderr)
    for path, text in failed:
        print(f'  {path}: {text}', file=sys.stderr)
    return 0 if done else 1


if __name__ == '__main__':
    sys.exit(main())
