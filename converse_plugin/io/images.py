"""Reading and writing the images ``basicsr infer`` restores: PNG, JPEG, BMP, TIFF; gray or colour; 8 or 16 bit.

Images are handled as float32 arrays in [0, 1], (H, W) for gray and (H, W, 3) RGB for colour, with the
bit depth remembered so the output is written with the input's depth (16-bit in, 16-bit out).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ['IMAGE_EXTENSIONS', 'ImageReadError', 'LoadedImage', 'image_header', 'list_image_files', 'read_image',
           'write_image']

# the one list of image file suffixes (data folders, infer inputs); all decoded by OpenCV
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.webp')


class ImageReadError(ValueError):
    """An image file that cannot be decoded or has an unsupported layout (the message names the file)."""


@dataclass
class LoadedImage:
    data: np.ndarray  # float32 in [0, 1]; (H, W) gray or (H, W, 3) RGB
    bits: int  # 8 or 16 (32 for float TIFFs, written back as 16-bit)
    path: str

    @property
    def is_gray(self) -> bool:
        return self.data.ndim == 2


def list_image_files(source: str) -> list[str]:
    """``source`` itself if it is a file, else the image files of the folder (by extension, sorted)."""
    if os.path.isfile(source):
        return [source]
    if not os.path.isdir(source):
        raise FileNotFoundError(f'-i {source}: no such file or folder')
    files = sorted(os.path.join(source, n) for n in os.listdir(source)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(source, n)))
    if not files:
        raise FileNotFoundError(f'-i {source}: the folder holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
    return files


def image_header(path: str) -> tuple[int, int, str] | None:
    """(height, width, PIL mode) from the file's header (the whole file only for formats PIL does not know),
    or None when it is not a readable image: the option checks read every image of a data folder this way."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width, img.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            return None
        return img.shape[0], img.shape[1], 'L' if img.ndim == 2 or img.shape[2] == 1 else 'RGB'


def read_image(path: str) -> LoadedImage:
    """Read ``path`` (any depth, gray/RGB/RGBA; alpha is dropped) as float32 in [0, 1].

    Raises:
        ImageReadError: the file cannot be decoded, or has an unsupported channel count or sample type.
    """
    buf = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ImageReadError(f'{path}: cannot decode the image (corrupt, truncated or not an image)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[..., :3]
        if img.shape[2] != 3:
            raise ImageReadError(f'{path}: {img.shape[2]} channels; expected gray, RGB or RGBA')
        img = img[..., ::-1]  # BGR -> RGB
    if img.dtype == np.uint8:
        bits, data = 8, img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        bits, data = 16, img.astype(np.float32) / 65535.0
    elif img.dtype in (np.float32, np.float64):
        bits, data = 32, np.clip(img.astype(np.float32), 0.0, 1.0)
    else:
        raise ImageReadError(f'{path}: sample type {img.dtype} is not supported (expected 8/16-bit integer or float)')
    return LoadedImage(np.ascontiguousarray(data), bits, path)


def write_image(path: str, data: np.ndarray, bits: int) -> None:
    """Write float ``data`` in [0, 1] ((H, W) or (H, W, 3) RGB) as an 8-bit or 16-bit image (>8: 16-bit)."""
    data = np.clip(data, 0.0, 1.0)
    if bits > 8:
        out = np.round(data * 65535.0).astype(np.uint16)
    else:
        out = np.round(data * 255.0).astype(np.uint8)
    if out.ndim == 3:
        out = np.ascontiguousarray(out[..., ::-1])  # RGB -> BGR
    ext = os.path.splitext(path)[1] or '.png'
    ok, encoded = cv2.imencode(ext, out)
    if not ok:
        raise OSError(f'{path}: cannot encode the image as {ext}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    encoded.tofile(path)
