"""The transform interface: a rewrite of a loaded model that composes with every elimination method.

    apply(model) -> model   rewrite after loading (in place or a new module); the result still runs through
                            patch.py's one layer loop, so elimination stacks on it unchanged
    config() -> dict        what a report or `tiltbench.json` records to reproduce the rewrite

Transforms apply in the order given, after the checkpoint (and its method) is loaded. One transform per file in
this folder with a `@register` class; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from tiltbench.errors import UserError

TRANSFORMS: dict[str, type[Transform]] = {}


class Transform:
    name: ClassVar[str]

    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name}


def register(cls: type[Transform]) -> type[Transform]:
    """Class decorator: make a transform available by `cls.name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    TRANSFORMS[cls.name] = cls
    return cls


def get_transform(name: str) -> type[Transform]:
    if name not in TRANSFORMS:
        known = ", ".join(sorted(TRANSFORMS)) or "none yet"
        raise UserError(f"unknown transform {name!r}; choose from {known}")
    return TRANSFORMS[name]


def apply_transforms(model: nn.Module, names: Sequence[str]) -> tuple[nn.Module, list[dict]]:
    """`model` with each named transform applied in order, and their configs (unknown names fail first)."""
    transforms = [get_transform(name)() for name in names]
    for transform in transforms:
        model = transform.apply(model)
    return model, [t.config() for t in transforms]
