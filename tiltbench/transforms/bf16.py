"""bfloat16 weights and activations (`--dtype bf16`): the whole model, and a patched model's method parameters
(gates, thresholds), cast to torch.bfloat16. On this CPU (AVX-512 BF16) the matmuls run in bf16; on CUDA too.
Scores, softmax and the gather run in bf16 as well; the additive mask is finfo.min/2 of the dtype
(eliminate.additive_mask), so a masked key never overflows to -inf. Logits are read back as fp32 for metrics.

oneDNN's primitive cache. On CPU every bf16 matmul shape is a JIT-compiled oneDNN primitive, kept in an LRU cache
of 1,024 by default. A dense model at batch 1 sees one sequence length per input; an eliminating one sees one per
layer, so on long inputs (IMDB, lengths up to 512 x 6 layers x 3 Linear shapes) the cache thrashes and every
forward recompiles: measured on IMDB batch 1, tau 0.1, 0.60x dense-bf16 with the default cache, 1.01-1.06x with
16,384 entries (dense-bf16 itself also 20 % faster, since interleaved timing evicted its primitives too).
`apply` raises the capacity to PRIMITIVE_CACHE_CAPACITY unless the user set ONEDNN_PRIMITIVE_CACHE_CAPACITY;
oneDNN reads it at its first primitive, so it only takes effect in a process that has not run a bf16 (oneDNN)
op before, which a tiltbench process has not: fp32 Linear runs on MKL, int8 on FBGEMM.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tiltbench.transforms.base import Transform, register

PRIMITIVE_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
PRIMITIVE_CACHE_CAPACITY = 16384  # entries; > 512 lengths x every matmul shape of a 6- or 12-layer encoder


@register
class BFloat16(Transform):
    name = "bf16"

    def apply(self, model: nn.Module) -> nn.Module:
        from tiltbench.patch import is_patched, method_of

        os.environ.setdefault(PRIMITIVE_CACHE_VARIABLE, str(PRIMITIVE_CACHE_CAPACITY))  # the user's setting wins
        model.to(torch.bfloat16)
        if is_patched(model):  # the method's parameters live beside the model, not inside it
            method_of(model).to(torch.bfloat16)
        return model

    def config(self) -> dict:
        return {
            "name": self.name,
            "dtype": "torch.bfloat16",
            "cast": "every parameter and buffer",
            # what apply asks oneDNN for: the user's setting, or ours
            "onednn_primitive_cache_capacity": os.environ.get(PRIMITIVE_CACHE_VARIABLE, str(PRIMITIVE_CACHE_CAPACITY)),
        }
