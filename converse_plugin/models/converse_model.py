"""ConverseModel: the plugin's model class (BasicSR's SRModel with the plugin's checkpoint policy, the blur
kernel fed to networks that take one, tiled validation, mixed precision, torch.compile and EMA warm-up)."""
from __future__ import annotations

import inspect

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from converse_plugin.models.base_model import PluginModel
from converse_plugin.models.tiling import tiled_forward
from converse_plugin.models.training_speed import TrainingSpeedMixin


def forward_parameters(net: nn.Module) -> set[str]:
    """Names of the parameters of ``net.forward`` (of the wrapped module for DataParallel/DDP)."""
    net = net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net
    return set(inspect.signature(net.forward).parameters)


@MODEL_REGISTRY.register()
class ConverseModel(PluginModel, TrainingSpeedMixin, SRModel):
    """SRModel for any network, plus:

    - the checkpoint policy of :class:`~converse_plugin.models.base_model.PluginModel` (atomic saves, exact
      resume, safe loading, ``path: save_format``);
    - ``train: amp`` and ``train: compile``
      (:class:`~converse_plugin.models.training_speed.TrainingSpeedMixin`);
    - ``val: tile`` (see :func:`tile_options`);
    - the blur kernel for networks whose ``forward`` has a ``kernel`` parameter:

    For such a network (e.g. ConverseUSRNet, ``forward(x, kernel, sf=1)``) every call of ``net_g`` and
    ``net_g_ema`` (training step, test, validation) becomes ``net(lq, kernel=self.kernel, sf=scale)``,
    with ``self.kernel`` the batch's ``kernel`` (B, 1, k, k) moved to the model's device, and ``sf`` the
    top-level option ``scale`` (default 1; passed only if ``forward`` has an ``sf`` parameter). A network
    without a ``kernel`` parameter (e.g. blind ConverseNet) is called as SRModel calls it. Everything
    else (losses, EMA, validation, metrics, saving, resuming) is SRModel's.

    The kernel is passed by a forward pre-hook on ``net_g`` and ``net_g_ema``, so SRModel's own methods
    are used unchanged; for ``net_g`` wrapped in DistributedDataParallel or DataParallel the hook sits on
    the wrapper, which moves (DDP) or splits (DataParallel) the kernels with the batch.
    """

    def __init__(self, opt: dict) -> None:
        self.kernel: torch.Tensor | None = None
        self.sf = int(opt.get('scale', 1))
        super().__init__(opt)
        nets = [self.net_g] + ([self.net_g_ema] if hasattr(self, 'net_g_ema') else [])
        for net in nets:
            params = forward_parameters(net)
            if 'kernel' in params:  # hooked on the wrapper: DataParallel then splits the kernels with the batch
                net.register_forward_pre_hook(self._kernel_hook(pass_sf='sf' in params), with_kwargs=True)

    def _kernel_hook(self, pass_sf: bool):

        def add_kernel(module: nn.Module, args: tuple, kwargs: dict):
            if 'kernel' in kwargs or len(args) > 1:  # the caller gave the kernel itself
                return None
            if self.kernel is None:
                name = type(self.get_bare_model(module)).__name__
                raise ValueError(f"{name} needs a blur kernel, but the data has no 'kernel' "
                                 '(use a dataset that returns one, e.g. BlurKernelDataset)')
            kwargs = dict(kwargs, kernel=self.kernel)
            if pass_sf:
                kwargs.setdefault('sf', self.sf)
            return args, kwargs

        return add_kernel

    def feed_data(self, data: dict) -> None:
        """SRModel's ``lq``/``gt``, plus ``kernel`` (B, 1, k, k) when the batch has one."""
        super().feed_data(data)
        kernel = data.get('kernel')
        self.kernel = None if kernel is None else kernel.to(self.device)

    def test(self) -> None:
        """SRModel's test, or, with ``val: tile: {size: N, overlap: M}``, the same network run on overlapping
        N x N tiles of ``lq`` (M pixels shared, blended), so memory is bounded by the tile size."""
        size, overlap = tile_options(self.opt.get('val') or {})
        if not size:
            return super().test()
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = tiled_forward(net, self.lq, size, overlap, scale=int(self.opt.get('scale', 1)))
        net.train(was_training)
        return None


def tile_options(val_opt: dict) -> tuple[int, int]:
    """``val: tile`` as (size, overlap): absent or ``~`` -> (0, 0); ``{size: N, overlap: M}`` (overlap default
    N // 8) or just N. Raises ValueError naming ``val:tile`` for anything else."""
    tile = val_opt.get('tile')
    if tile is None or tile is False:
        return 0, 0
    if isinstance(tile, int) and not isinstance(tile, bool):
        tile = {'size': tile}
    if not isinstance(tile, dict) or set(tile) - {'size', 'overlap'}:
        raise ValueError(f"val:tile must be an integer or {{size: N, overlap: M}}, got {tile!r}")
    size, overlap = tile.get('size'), tile.get('overlap', None)
    overlap = max(size // 8, 0) if overlap is None and isinstance(size, int) else overlap
    for key, value, low in (('size', size, 1), ('overlap', overlap, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'val:tile:{key} must be an integer >= {low}, got {value!r}')
    if overlap >= size:
        raise ValueError(f'val:tile:overlap ({overlap}) must be smaller than val:tile:size ({size})')
    return size, overlap
