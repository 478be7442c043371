"""Model transforms, one file each, behind one registry (`TRANSFORMS`, `register`, `get_transform`).

A transform rewrites a loaded model in a way that is not elimination (dynamic int8 Linear layers, a bf16 cast,
hashed n-gram input embeddings: [stack] and [eel] add them). Every module in this folder is imported here, so
a new transform file registers itself by being present.
"""

import importlib
import pkgutil

from tiltbench.transforms.base import TRANSFORMS, Transform, apply_transforms, get_transform, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TRANSFORMS", "Transform", "apply_transforms", "get_transform", "register"]
