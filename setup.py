"""converse-plugin: reverse convolution (Converse2D) and ConverseNets for BasicSR."""
import os
import runpy

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithStartupHook(build_py):
    """Also install converse_plugin_compat.pth: compat fix 1 for modules imported before the plugin."""

    def run(self):
        super().run()
        compat = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'converse_plugin', 'compat.py'))
        with open(os.path.join(self.build_lib, compat['STARTUP_HOOK_FILE']), 'w', encoding='utf-8') as f:
            f.write(compat['startup_hook_line']())


setup(
    name='converse-plugin',
    version='0.1.0',
    description='Reverse convolution (Converse2D, ICCV 2025) and ConverseNets as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['converse_plugin', 'converse_plugin.*']),
    package_data={'converse_plugin': ['zoo/*.json']},
    # torch/torchvision are deliberately unpinned: installing this package must never pull a second
    # torch. Install torch first, then basicsr with --no-build-isolation (see the Makefile).
    install_requires=[
        'torch>=2.8',  # the fast test tier passes with 2.8, 2.11, 2.14.1; 2.4 cannot register the custom operator
        'torchvision',
        'basicsr==1.4.2',
        'mmengine',
        'lpips',
        'matplotlib',  # basicsr compare's quality-vs-cost chart
        'opencv-python',
        'pyyaml',
        'numpy',
        'scipy',
        'tqdm',
    ],
    # realesrgan: the side-by-side test with another BasicSR plugin (tests/e2e/test_other_plugins.py);
    # playwright: drives the system's Chromium for report.html (tests/tools/test_compare_report.py; the browser
    # itself is Debian's chromium package, never downloaded by playwright)
    extras_require={'test': ['pytest', 'hypothesis', 'onnx', 'onnxscript', 'onnxruntime', 'safetensors',
                             'realesrgan==0.3.0', 'playwright'],
                    'export': ['onnx', 'onnxscript', 'onnxruntime', 'safetensors'],
                    'spandrel': ['spandrel==0.4.2']},
    entry_points={'console_scripts': ['basicsr=converse_plugin.cli:main']},
    cmdclass={'build_py': BuildPyWithStartupHook},
)
