"""Checks of the image folders that BasicSR's own image datasets read, from their options.

BasicSR's ``PairedImageDataset`` (and ``RealESRGANPairedDataset``, and subclasses of either) pair each GT file
with the LQ file ``filename_tmpl.format(<GT stem>) + <extension>``, found by scanning both folders, listed in
``meta_info_file`` or read from two LMDBs; ``SingleImageDataset`` reads one folder, meta info file or LMDB.
Their users' most common mistakes end in BasicSR in an ``AssertionError`` (``0001.png is not in lq_paths.``),
a ``FileNotFoundError`` in the middle of training, or shapes that do not match in the first crop. Here each
becomes one :class:`~converse_plugin.errors.DataError` that names the option file, the key and what to change:

- LQ files named ``0001x4.png`` without a matching ``filename_tmpl`` (the template is guessed from the names);
- GT and LQ folders with different numbers of files;
- a meta info file that lists files missing from the folders;
- LQ and GT sizes that do not match ``scale`` where BasicSR would fail (training: GT = scale x LQ; validation
  and test: GT at least scale x LQ, as BasicSR crops it to that; a GT larger by ``scale`` pixels or more is a
  note in the log), and crops larger than the images;
- an LMDB without its ``meta_info.txt``, or not named ``*.lmdb``; GT and LQ LMDBs with different keys;
- one LMDB read by two data sets in the main process (BasicSR's LMDB backend cannot open it twice).

The checks read the options (public keys of these datasets) and the files; they never read a dataset's
attributes. Datasets of other classes, and other IO backends, are left alone.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from os import path as osp
from typing import Any

from converse_plugin.errors import DataError, DataFileNotFoundError
from converse_plugin.io.images import image_header

__all__ = ['check_image_folders', 'check_shared_lmdbs', 'dataset_family']

MAX_SIZE_CHECKS = 5000  # pairs whose headers are read (evenly spread over larger sets)


def dataset_family(ds_cls: Any) -> str | None:
    """'paired' or 'single' for BasicSR's image datasets and their subclasses, else None."""
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.data.realesrgan_paired_dataset import RealESRGANPairedDataset
    from basicsr.data.single_image_dataset import SingleImageDataset

    if not isinstance(ds_cls, type):
        return None
    if issubclass(ds_cls, (PairedImageDataset, RealESRGANPairedDataset)):
        return 'paired'
    if issubclass(ds_cls, SingleImageDataset):
        return 'single'
    return None


def _backend(ds_opt: Mapping) -> Any:
    io_opt = ds_opt.get('io_backend')
    return io_opt.get('type') if isinstance(io_opt, Mapping) else None


def check_image_folders(file: str, where: str, ds_opt: Mapping, ds_cls: Any) -> list[str]:
    """Check the files that ``ds_opt`` (a dataset of class ``ds_cls``) will read (see the module docstring);
    returns notes for the log (what BasicSR accepts but is likely a mistake)."""
    family = dataset_family(ds_cls)
    backend = _backend(ds_opt)
    if family is None or backend not in ('disk', 'lmdb'):
        return []
    keys = ('dataroot_gt', 'dataroot_lq') if family == 'paired' else ('dataroot_lq',)
    roots = [ds_opt.get(key) for key in keys]
    if not all(isinstance(root, str) and root for root in roots):
        return []  # missing keys: the option checks and the dataset's constructor report them
    for key, root in zip(keys, roots):
        if not osp.isdir(root):
            raise DataFileNotFoundError(f'{file}: {where}:{key}: folder {root} does not exist')
    if backend == 'lmdb':
        names = [_lmdb_keys(file, where, key, root) for key, root in zip(keys, roots)]
        if family == 'paired' and set(names[0]) != set(names[1]):
            only_gt, only_lq = sorted(set(names[0]) - set(names[1])), sorted(set(names[1]) - set(names[0]))
            example = (f'{only_gt[0]!r} only in dataroot_gt' if only_gt else f'{only_lq[0]!r} only in dataroot_lq')
            raise DataError(f'{file}: {where}: the LMDBs of dataroot_gt ({roots[0]}) and dataroot_lq ({roots[1]}) hold '
                            f'different keys ({example}); make both from the same list of images')
        return []
    meta = ds_opt.get('meta_info_file')
    if family == 'single':
        if meta is not None:
            listed = _meta_names(file, where, meta)
            _missing(file, where, [(n, osp.join(roots[0], n)) for n in listed], 'dataroot_lq', roots[0], meta)
        return []
    tmpl = ds_opt.get('filename_tmpl', '{}')
    if not isinstance(tmpl, str) or '{}' not in tmpl:
        raise DataError(f"{file}: {where}:filename_tmpl must be a string with '{{}}' for the GT file's stem "
                        f"(e.g. '{{}}x4' for 0001x4.png), got {tmpl!r}")
    gt_root, lq_root = roots
    if meta is not None:
        pairs = [(osp.join(gt_root, n), osp.join(lq_root, _lq_name(n, tmpl))) for n in _meta_names(file, where, meta)]
        _missing(file, where, [(osp.basename(g), g) for g, _ in pairs], 'dataroot_gt', gt_root, meta)
        missing_lq = [(osp.basename(lq), lq) for _, lq in pairs if not osp.isfile(lq)]
        if missing_lq:
            raise DataError(f'{file}: {where}: meta_info_file {meta} lists {osp.basename(pairs[0][0])}, ..., but '
                            f'dataroot_lq {lq_root} has no {missing_lq[0][0]} ({len(missing_lq)} of {len(pairs)} LQ '
                            f'files missing){_template_hint(lq_root, pairs, tmpl)}')
    else:
        pairs = _folder_pairs(file, where, gt_root, lq_root, tmpl)
    return _check_sizes(file, where, ds_opt, pairs)


def check_shared_lmdbs(file: str, datasets: Mapping, classes: Mapping[str, Any]) -> None:
    """No LMDB is read by two data sets of BasicSR's image families in the main process: validation and test
    sets always load there, a training set when ``num_worker_per_gpu`` is 0. BasicSR's LMDB backend opens
    a database once per process and fails on the second (at the first validation, hours into a run)."""
    seen: dict[str, str] = {}
    for phase, ds_opt in datasets.items():
        if not isinstance(ds_opt, Mapping) or _backend(ds_opt) != 'lmdb' or dataset_family(classes.get(phase)) is None:
            continue
        if str(phase).startswith('train') and ds_opt.get('num_worker_per_gpu') != 0:
            continue
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = ds_opt.get(key)
            if not isinstance(root, str):
                continue
            real = osp.realpath(root)
            if real in seen:
                raise DataError(f'{file}: datasets:{phase}:{key}: LMDB {root} is also read by {seen[real]} in the same '
                                "process, and BasicSR's LMDB backend cannot open a database twice; validate on the "
                                'image folders (io_backend: disk) or on a copy of the LMDB')
            seen[real] = f'datasets:{phase}:{key}'


def _lmdb_keys(file: str, where: str, key: str, root: str) -> list[str]:
    if not root.endswith('.lmdb'):
        raise DataError(f"{file}: {where}:{key}: {root} is not an LMDB (BasicSR's LMDBs are folders named *.lmdb); "
                        'set io_backend: {type: disk} for an image folder')
    meta = osp.join(root, 'meta_info.txt')
    if not osp.isfile(meta):
        raise DataError(f'{file}: {where}:{key}: LMDB {root} has no meta_info.txt, where BasicSR reads its keys; '
                        "make it with BasicSR's scripts/data_preparation/create_lmdb.py "
                        '(basicsr.utils.lmdb_util.make_lmdb_from_imgs), which writes it')
    with open(meta, encoding='utf-8') as f:
        return [line.split('.')[0] for line in f if line.strip()]  # as paired_paths_from_lmdb reads it


def _meta_names(file: str, where: str, meta: Any) -> list[str]:
    if not isinstance(meta, str) or not osp.isfile(meta):
        raise DataFileNotFoundError(f'{file}: {where}:meta_info_file: file {meta} does not exist')
    with open(meta, encoding='utf-8') as f:
        names = [line.rstrip().split(' ')[0] for line in f if line.strip()]
    if not names:
        raise DataError(f'{file}: {where}:meta_info_file: {meta} lists no image')
    return names


def _lq_name(gt_name: str, tmpl: str) -> str:
    stem, ext = osp.splitext(osp.basename(gt_name))
    return osp.join(osp.dirname(gt_name), f'{tmpl.format(stem)}{ext}')


def _missing(file: str, where: str, listed: list[tuple[str, str]], key: str, root: str, meta: str) -> None:
    missing = [name for name, full in listed if not osp.isfile(full)]
    if missing:
        raise DataError(f'{file}: {where}:meta_info_file: {meta} lists {missing[0]}, which is not in {key} {root} '
                        f'({len(missing)} of {len(listed)} listed files missing); make the meta info file for this '
                        "folder (BasicSR's scripts/data_preparation/generate_meta_info.py) or remove those lines")


def _files(folder: str) -> list[str]:
    """The file names BasicSR's ``scandir(folder)`` yields (not recursive, every file)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_file() and not entry.name.startswith('.'))


def _guess_template(gt_stem: str, lq_names: Iterable[str]) -> str | None:
    """The ``filename_tmpl`` that names an LQ file after ``gt_stem`` (``0001x4.png`` -> ``'{}x4'``), if any."""
    for name in sorted(lq_names, key=len):
        stem = osp.splitext(name)[0]
        if gt_stem in stem and stem != gt_stem:
            return stem.replace(gt_stem, '{}', 1)
    return None


def _template_hint(lq_root: str, pairs: list[tuple[str, str]], tmpl: str) -> str:
    stem, ext = osp.splitext(osp.basename(pairs[0][0]))
    guess = _guess_template(stem, _files(lq_root)) if osp.isdir(lq_root) else None
    if guess is not None and guess != tmpl:
        return f"; its files are named like {guess.format(stem)}{ext}: set filename_tmpl: '{guess}'"
    return f"; filename_tmpl '{tmpl}' names the LQ file of GT <stem>.png '{tmpl.format('<stem>')}.png'"


def _folder_pairs(file: str, where: str, gt_root: str, lq_root: str, tmpl: str) -> list[tuple[str, str]]:
    gt_names, lq_names = _files(gt_root), _files(lq_root)
    if not gt_names:
        raise DataError(f'{file}: {where}:dataroot_gt: folder {gt_root} holds no file')
    pairs = [(osp.join(gt_root, n), osp.join(lq_root, _lq_name(n, tmpl))) for n in gt_names]
    lq_set = set(lq_names)
    missing = [osp.basename(lq) for _, lq in pairs if osp.basename(lq) not in lq_set]
    if missing:
        raise DataError(f'{file}: {where}: dataroot_lq {lq_root} has no {missing[0]} for GT {osp.basename(pairs[0][0])} '
                        f'({len(missing)} of {len(pairs)} GT files without an LQ file)'
                        f'{_template_hint(lq_root, pairs, tmpl)}')
    if len(gt_names) != len(lq_names):
        extra = sorted(lq_set - {osp.basename(lq) for _, lq in pairs})
        raise DataError(f'{file}: {where}: dataroot_gt has {len(gt_names)} files and dataroot_lq {len(lq_names)} '
                        f'({extra[0]}, ... have no GT file); BasicSR pairs every GT file with exactly one LQ file: '
                        'move the extra files out, or list the pairs in a meta_info_file')
    return pairs


def _check_sizes(file: str, where: str, ds_opt: Mapping, pairs: list[tuple[str, str]]) -> list[str]:
    scale = ds_opt.get('scale', 1)
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        return []
    train = ds_opt.get('phase') == 'train'
    gt_size = ds_opt.get('gt_size') if train else None
    step = max(1, len(pairs) // MAX_SIZE_CHECKS)
    notes: list[str] = []
    for gt_path, lq_path in pairs[::step]:
        headers = {path: image_header(path) for path in (gt_path, lq_path)}
        for path, header in headers.items():
            if header is None:
                raise DataError(f'{file}: {where}: cannot read image file {path} (not an image BasicSR can decode); '
                                'replace it or remove the pair')
        gt, lq = headers[gt_path][:2], headers[lq_path][:2]
        exact = all(g == s * scale for g, s in zip(gt, lq))
        if not exact and (train or any(g < s * scale for g, s in zip(gt, lq))):
            ratio = ' x '.join(f'{g / s:.3g}' for g, s in zip(gt, lq))
            rule = 'scale times' if train else 'at least scale times'
            raise DataError(f'{file}: {where}: GT {gt_path} is {gt[0]}x{gt[1]} and LQ {lq_path} {lq[0]}x{lq[1]} '
                            f'(HxW, ratio {ratio}), but scale is {scale}: GT must be {rule} the LQ size; set scale to '
                            'the ratio of the folders or point dataroot_lq at the LQ images of this scale')
        if not exact and any(g >= (s + 1) * scale for g, s in zip(gt, lq)) and not notes:
            notes.append(f'{where}: GT {gt_path} is {gt[0]}x{gt[1]}, more than scale ({scale}) times LQ {lq_path} '
                         f'{lq[0]}x{lq[1]}: BasicSR crops the GT image to scale x LQ from its top left corner, so the '
                         'metrics compare different content; check scale and dataroot_lq')
        if isinstance(gt_size, int) and (gt[0] < gt_size or gt[1] < gt_size):
            raise DataError(f'{file}: {where}: GT {gt_path} is {gt[0]}x{gt[1]}, smaller than gt_size {gt_size}; '
                            'lower gt_size or remove the image')
    return notes
