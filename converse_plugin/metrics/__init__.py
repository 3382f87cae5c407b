"""Metrics registered in BasicSR's METRIC_REGISTRY."""
from converse_plugin.metrics import psnr_ssim  # noqa: F401
