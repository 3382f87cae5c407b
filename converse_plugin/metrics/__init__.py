"""Metrics registered in BasicSR's METRIC_REGISTRY."""
from converse_plugin.metrics import psnr_ssim  # noqa: F401
from converse_plugin.metrics import lpips_metric  # noqa: F401
