"""converse-plugin: reverse convolution (Converse2D) and ConverseNets for BasicSR."""
from setuptools import find_packages, setup

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
        'torch>=2.0',
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
    extras_require={'test': ['pytest', 'hypothesis', 'onnx', 'onnxscript', 'onnxruntime', 'safetensors'],
                    'export': ['onnx', 'onnxscript', 'onnxruntime', 'safetensors'],
                    'spandrel': ['spandrel==0.4.2']},
    entry_points={'console_scripts': ['basicsr=converse_plugin.cli:main']},
)
