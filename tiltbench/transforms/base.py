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


# What a run's numerics are: "fp32" (no transform) or one registered transform. int8 and bf16 do not compose
# (dynamic int8 Linear takes and returns fp32 activations), so a run has one.
FP32 = "fp32"


def transform_spec(quantize: str = "none", dtype: str = "fp32") -> str:
    """The CLI's `--quantize none|int8` and `--dtype fp32|bf16` as one transform name (fp32: none)."""
    if quantize not in ("none", "int8"):
        raise UserError(f"--quantize must be none or int8, got {quantize!r}")
    if dtype not in ("fp32", "bf16"):
        raise UserError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    if quantize != "none" and dtype != "fp32":
        raise UserError(
            "--quantize int8 and --dtype bf16 do not stack (dynamic int8 Linear layers compute around fp32 "
            "activations); choose one"
        )
    return quantize if quantize != "none" else dtype


def check_transform(name: str, device: str = "cpu") -> str:
    """`name` if it is fp32 or a registered transform that runs on `device`; UserError otherwise."""
    if name != FP32:
        get_transform(name)
    if name == "int8" and device != "cpu":
        raise UserError(
            "the int8 transform (--quantize int8, or int8 in --transforms) runs on the CPU only: dynamic int8 "
            "Linear has no CUDA kernel; use --device cpu"
        )
    return name


def parse_transforms(text: str) -> tuple[str, ...]:
    """`--transforms fp32,int8,bf16` (a sweep's grid of numerics), each checked, duplicates dropped."""
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not names:
        raise UserError("--transforms is empty; give a comma list of fp32, int8, bf16")
    for name in names:
        if name != FP32 and name not in TRANSFORMS:
            raise UserError(
                f"unknown transform {name!r} in --transforms; choose from fp32, {', '.join(sorted(TRANSFORMS))}"
            )
    return names


def apply_spec(model: nn.Module, name: str) -> tuple[nn.Module, list[dict]]:
    """`model` under the transform `name` (fp32: unchanged)."""
    return (model, []) if name == FP32 else apply_transforms(model, [name])


def model_megabytes(model: nn.Module) -> float:
    """Size of the model's serialised state_dict in MB (10^6 bytes): what a saved checkpoint of it weighs."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return round(buffer.tell() / 1e6, 2)


def memory_megabytes(model: nn.Module) -> float:
    """What the model holds in memory, MB: its serialised state_dict plus the buffers a checkpoint does not save
    (e.g. hashed embeddings' vocabulary features, recomputed at load)."""
    saved = set(model.state_dict())
    unsaved = sum(b.numel() * b.element_size() for name, b in model.named_buffers() if name not in saved)
    return round(model_megabytes(model) + unsaved / 1e6, 2)


def parameter_split(model: nn.Module) -> dict[str, int]:
    """Parameters by part: the word embeddings (a table, or a hashed embedding's projection), the other embeddings
    (positions, token types, LayerNorm), the encoder, and the head (pooler, classifier)."""
    word = {id(p) for p in model.get_input_embeddings().parameters()}
    base = getattr(model, "base_model", model)
    embeddings = {id(p) for p in base.embeddings.parameters()} if hasattr(base, "embeddings") else set()
    encoder = {id(p) for p in base.encoder.parameters()} if hasattr(base, "encoder") else set()
    split = {"word_embeddings": 0, "other_embeddings": 0, "encoder": 0, "head": 0}
    for p in model.parameters():
        part = (
            "word_embeddings" if id(p) in word
            else "other_embeddings" if id(p) in embeddings
            else "encoder" if id(p) in encoder
            else "head"
        )  # fmt: skip
        split[part] += p.numel()
    return split
