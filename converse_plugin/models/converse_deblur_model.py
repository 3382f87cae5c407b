"""ConverseDeblurModel: BasicSR's SRModel for networks that also take the blur kernel."""
from __future__ import annotations

import inspect

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn


def forward_parameters(net: nn.Module) -> set[str]:
    """Names of the parameters of ``net.forward`` (of the wrapped module for DataParallel/DDP)."""
    net = net.module if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else net
    return set(inspect.signature(net.forward).parameters)


@MODEL_REGISTRY.register()
class ConverseDeblurModel(SRModel):
    """SRModel that feeds ``data['kernel']`` to networks whose ``forward`` has a ``kernel`` parameter.

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
