"""Validation and testing split across the ranks of a distributed run, with the single-process numbers.

BasicSR 1.4.2's ``SRModel.dist_validation`` runs the whole validation on rank 0 while the other ranks
wait. :func:`validate` gives each rank every ``world_size``-th image (image ``i`` to rank ``i % world``:
no padding, no duplicates), runs the model's own ``feed_data`` / ``test`` / ``get_current_visuals`` on it,
computes BasicSR's metrics per image (:func:`basicsr.metrics.calculate_metric` with ``val:metrics``) and
saves each image once (by the rank that made it). The per-image results are gathered on every rank
(``all_gather_object``) and added up in dataset order, exactly as ``nondist_validation`` adds them, so the
per-image values and the means equal a single-process run's, to the bit; the log lines
(``Validation <name>`` / ``# psnr: ... Best: ...``), the best-metric tracking and the TensorBoard scalars are
BasicSR's own methods.

It applies to models whose ``nondist_validation`` is ``SRModel``'s (SRModel, SRGANModel, ESRGANModel,
ConverseModel, ...). A model with its own validation (e.g. video models) keeps BasicSR's behaviour.
"""
from __future__ import annotations

from os import path as osp
from typing import Any

import torch

from converse_plugin.engine.dist import gather_to_all, is_distributed

__all__ = ['validate', 'supports_sharded_validation', 'shard_indices', 'evaluate_images', 'combine_results']


def supports_sharded_validation(model: Any) -> bool:
    """Whether ``model`` validates image by image with SRModel's loop (which :func:`validate` reproduces)."""
    from basicsr.models.sr_model import SRModel

    return isinstance(model, SRModel) and type(model).nondist_validation is SRModel.nondist_validation


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The images of ``rank``: ``rank, rank + world_size, ...`` (every image once over all ranks)."""
    return list(range(rank, n, world_size))


def _save_path(opt: dict, dataset_name: str, img_name: str, current_iter: Any) -> str:
    """Where ``SRModel.nondist_validation`` saves an image."""
    if opt['is_train']:
        return osp.join(opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
    suffix = opt['val'].get('suffix')
    return osp.join(opt['path']['visualization'], dataset_name, f"{img_name}_{suffix or opt['name']}.png")


def evaluate_images(model: Any, dataset: Any, indices: list[int], collate: Any, current_iter: Any,
                    save_img: bool) -> list[tuple[int, str, dict]]:
    """``(index, image name, {metric: value})`` for each image ``indices`` of ``dataset``, as SRModel's
    ``nondist_validation`` computes them (saving each image when ``save_img``)."""
    from basicsr.metrics import calculate_metric
    from basicsr.utils import imwrite, tensor2img

    metrics = model.opt['val'].get('metrics')
    dataset_name = dataset.opt['name']
    results = []
    # the bare network: a DistributedDataParallel forward may run collectives (buffer broadcasts) that the
    # other ranks, busy with other images or none, would never join
    wrapped = model.net_g
    model.net_g = model.get_bare_model(wrapped)
    try:
        for idx in indices:
            val_data = collate([dataset[idx]])
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            model.feed_data(val_data)
            model.test()
            visuals = model.get_current_visuals()
            metric_data = {'img': tensor2img([visuals['result']])}
            if 'gt' in visuals:
                metric_data['img2'] = tensor2img([visuals['gt']])
                del model.gt
            del model.lq
            del model.output
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if save_img:
                imwrite(metric_data['img'], _save_path(model.opt, dataset_name, img_name, current_iter))
            values = {name: calculate_metric(metric_data, opt_) for name, opt_ in metrics.items()} if metrics else {}
            results.append((idx, img_name, values))
    finally:
        model.net_g = wrapped
    return results


def combine_results(model: Any, dataset_name: str, results: list[tuple[int, str, dict]], current_iter: Any,
                    tb_logger: Any) -> None:
    """Means in dataset order (the same additions as ``nondist_validation``), best-metric update, log lines."""
    results = sorted(results, key=lambda r: r[0])
    model.per_image_metrics = getattr(model, 'per_image_metrics', {})
    model.per_image_metrics[dataset_name] = [(name, values) for _, name, values in results]
    if model.opt['val'].get('metrics') is None or not results:
        return
    if not hasattr(model, 'metric_results'):
        model.metric_results = {metric: 0 for metric in model.opt['val']['metrics'].keys()}
    model._initialize_best_metric_results(dataset_name)
    model.metric_results = {metric: 0 for metric in model.metric_results}
    for _, _, values in results:
        for name in model.opt['val']['metrics']:
            model.metric_results[name] += values[name]
    for metric in model.metric_results.keys():
        model.metric_results[metric] /= len(results)
        model._update_best_metric_result(dataset_name, metric, model.metric_results[metric], current_iter)
    model._log_validation_metric_values(current_iter, dataset_name, tb_logger)


def validate(model: Any, dataloader: Any, current_iter: Any, tb_logger: Any, save_img: bool) -> None:
    """``model.validation(...)``, split across the ranks of a distributed run (see the module docstring).
    Every rank must call it. Without a process group, or for a model with its own validation loop, it is
    BasicSR's ``model.validation``."""
    if not (model.opt.get('dist') and is_distributed() and supports_sharded_validation(model)):
        model.validation(dataloader, current_iter, tb_logger, save_img)
        return
    import torch.distributed as dist

    dataset = dataloader.dataset
    mine = shard_indices(len(dataset), dist.get_rank(), dist.get_world_size())
    results = evaluate_images(model, dataset, mine, dataloader.collate_fn, current_iter, save_img)
    everyone = [r for part in gather_to_all(results) for r in part]
    combine_results(model, dataset.opt['name'], everyone, current_iter, tb_logger)
