"""Datasets, registered in BasicSR's DATASET_REGISTRY on import: GaussianNoiseDataset,
BicubicDownsampleDataset, BlurKernelDataset; plus kernel loading/generation and the degradations."""
from converse_plugin.data.bicubic_downsample_dataset import BicubicDownsampleDataset
from converse_plugin.data.blur_kernel_dataset import BlurKernelDataset
from converse_plugin.data.gaussian_noise_dataset import GaussianNoiseDataset
from converse_plugin.data.kernels import load_kernels, random_kernel

__all__ = ['BicubicDownsampleDataset', 'BlurKernelDataset', 'GaussianNoiseDataset', 'load_kernels', 'random_kernel']
