"""Dynamic int8 Linear layers (`--quantize int8`): every nn.Linear's weights stored as int8, activations
quantised per batch, the matmul in int8 (VNNI on this CPU) and accumulated in int32.

Backend: `torch.ao.quantization.quantize_dynamic`. It is deprecated (torch says it will be removed in favour of
torchao), but on the 2-core AVX-512 VNNI machine it is the fast int8 path: torchao 0.18's
`Int8DynamicActivationInt8WeightConfig` measured 4.6x *slower* than fp32 there, and ONNX Runtime's dynamic
int8 is another runtime (its own process, its own thread pool; `benchmarks/int8_backends.py` times all three).
The choice lives in this one file: when torch drops the API, only `_quantize` changes. The deprecation warning
is silenced here (it would print on every load) and recorded in `config()` instead.

What is quantised: every Linear (Q, K, V, attention output, FFN in and out, pooler, classifier), with one int8
scale per output channel (`per_channel_dynamic_qconfig`), not torch's default one per tensor. Measured on the
full-SST-2 range + teacher checkpoint over tilt rates 0-0.4 (dev set, 872 sentences): per tensor lost 0.9-1.6
points against fp32 at tilt rates 0.2-0.26 (0.869 / 0.862 against 0.878 / 0.878); per channel is within noise
of fp32 at every rate (0.881 / 0.875), for 1-4 % of int8's speed (dense MiniLM, SST-2, batch 32: 1.78x fp32 per
tensor, 1.71x per channel). Embeddings and LayerNorms stay fp32,
so are the method's own parameters (gates, thresholds: they are not Linear layers). Quantised Linear has no
CUDA kernel: int8 runs on the CPU only (`base.check_transform`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from tiltbench.errors import UserError
from tiltbench.transforms.base import Transform, register

BACKEND = "torch.ao.quantization.quantize_dynamic"


def _quantize(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(deprecated|torch\.ao\.quantization).*")
        from torch.ao.quantization import per_channel_dynamic_qconfig

        qconfig = {nn.Linear: per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(model, qconfig, dtype=torch.qint8, inplace=True)


@register
class DynamicInt8(Transform):
    name = "int8"

    def apply(self, model: nn.Module) -> nn.Module:
        if any(p.is_cuda for p in model.parameters()):
            raise UserError("--quantize int8 runs on the CPU only (dynamic int8 Linear has no CUDA kernel)")
        return _quantize(model)

    def config(self) -> dict:
        return {
            "name": self.name,
            "backend": BACKEND,
            "engine": torch.backends.quantized.engine,
            "quantised": "every nn.Linear: int8 weights (per output channel), activations quantised per batch",
            "deprecation": "torch.ao.quantization is deprecated; kept because torchao 0.18's int8 measured 4.6x "
            "slower than fp32 on this CPU",
        }
