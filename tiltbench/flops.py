"""FLOPs two ways, units labelled: the analytic encoder count (speed_model.py) and fvcore's traced count.

fvcore counts one multiply-add as one flop, so its "flops" are MACs. It traces one forward with eager
attention (sdpa is one opaque op to it). Beyond the analytic encoder MACs it also counts the pooler and
classifier Linears, LayerNorm, and the scoring matmul of eliminating layers (H*n^2 per example); it leaves
out softmax, GELU, embeddings lookups, top-k and gather, as the analytic count does — and `aten::baddbmm`,
which it has no handler for, so the QK^T of eliminating layers (scale and mask fused into it) goes uncounted:
on IMDB-length inputs at high tilt rates fvcore then reads up to ~4 % below the analytic count. The trace runs
with the fused attention kernel held off (tiltbench/fused.py), whose matmuls fvcore could not see.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from tiltbench import fused


class _Logits(nn.Module):
    """fvcore traces positional tensors to a tensor: wrap the HF model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def fvcore_macs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[int, dict]:
    """(total MACs, MACs by operator) of one traced forward, by fvcore."""
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings(), torch.inference_mode(), fused.held_off():  # the kernel's matmuls are opaque
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(_Logits(model).eval(), (input_ids, attention_mask))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return int(analysis.total()), {op: int(v) for op, v in analysis.by_operator().items()}
