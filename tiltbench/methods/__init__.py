"""Elimination methods, one file each, behind one registry (`METHODS`, `register`, `get_method`).

Every module in this folder is imported here, so a new method file registers itself by being present.
"""

import importlib
import pkgutil

from tiltbench.methods.base import METHODS, LayerView, Method, TrainStage, get_method, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "LayerView", "Method", "TrainStage", "get_method", "register"]
