"""Build script. Pure-Python install always works; compiled parts are optional and never fail the install.

The CUDA extension (``vsr_engine._C``, csrc/) is built when a CUDA-enabled torch and nvcc are both present;
otherwise it is skipped with a message and vsr_engine falls back to Triton / torch at run time.
"""
from setuptools import setup

setup()
