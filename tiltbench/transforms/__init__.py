"""Model transforms, one file each, behind one registry (`TRANSFORMS`, `register`, `get_transform`).

A transform rewrites a loaded model in a way that is not elimination (dynamic int8 Linear layers, a bf16 cast,
hashed n-gram input embeddings: [stack] and [eel] add them). Every module in this folder is imported here, so
a new transform file registers itself by being present.
"""

import importlib
import pkgutil

from tiltbench.transforms.base import (
    FP32,
    TRANSFORMS,
    Transform,
    apply_spec,
    apply_transforms,
    check_transform,
    get_transform,
    parse_transforms,
    register,
    transform_spec,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "FP32",
    "TRANSFORMS",
    "Transform",
    "apply_spec",
    "apply_transforms",
    "check_transform",
    "get_transform",
    "parse_transforms",
    "register",
    "transform_spec",
]
