"""The engine the plugin owns: option loading and early checks, the training and test loops, resume,
distributed start. It calls BasicSR's models, datasets, metrics and loggers through their public API.

``train_pipeline(root_path)`` / ``test_pipeline(root_path)`` are what ``basicsr train`` / ``basicsr test``
run, and what a user's own ``train.py`` calls (as with BasicSR's functions of the same names).
"""
from converse_plugin.engine.test import test_pipeline
from converse_plugin.engine.train import train_pipeline

__all__ = ['train_pipeline', 'test_pipeline']
