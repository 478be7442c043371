"""bfloat16 weights and activations (`--dtype bf16`): the whole model, and a patched model's method parameters
(gates, thresholds), cast to torch.bfloat16. On this CPU (AVX-512 BF16) the matmuls run in bf16; on CUDA too.
Scores, softmax and the gather run in bf16 as well; the additive mask is finfo.min/2 of the dtype
(eliminate.additive_mask), so a masked key never overflows to -inf. Logits are read back as fp32 for metrics.
"""

from __future__ import annotations

import torch
from torch import nn

from tiltbench.transforms.base import Transform, register


@register
class BFloat16(Transform):
    name = "bf16"

    def apply(self, model: nn.Module) -> nn.Module:
        from tiltbench.patch import is_patched, method_of

        model.to(torch.bfloat16)
        if is_patched(model):  # the method's parameters live beside the model, not inside it
            method_of(model).to(torch.bfloat16)
        return model

    def config(self) -> dict:
        return {"name": self.name, "dtype": "torch.bfloat16", "cast": "every parameter and buffer"}
