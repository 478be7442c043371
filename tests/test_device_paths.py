"""The GPU-facing parts of the elimination core, checked on CPU: one host sync per planned forward (run on the
meta device, where any other read of a tensor's values fails), no all-masked attention rows, and finite outputs
in fp16/bf16 with an all-padding row. CUDA itself: tests/test_cuda.py (skipped without a GPU)."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import random_batch, tiny_bert

from tiltbench import Schedule, patch, realised_counts, set_schedule
from tiltbench.eliminate import additive_mask, hf_mask
from tiltbench.patch import find_encoder

patch_module = importlib.import_module("tiltbench.patch")  # `tiltbench.patch` is the function


@pytest.mark.parametrize("keep_all", [False, True])
def test_a_planned_forward_reads_the_device_once(monkeypatch, keep_all):
    """Meta tensors have shapes but no values: every .tolist(), .item(), bool() or .cpu() of one raises. The
    forward runs on meta with only `host_lengths` (the one intended sync) answered from real lengths."""
    model = patch(tiny_bert("sdpa"), tilt_rate=0.0 if keep_all else 0.3)
    if keep_all:
        set_schedule(model, 0.0, keep_all=True)
    encoder = find_encoder(model).to("meta")
    lengths = torch.tensor([7, 5, 3])
    reads: list[str] = []

    def host_lengths(valid, checked=True):
        reads.append(valid.device.type)
        return lengths.clone()

    monkeypatch.setattr(patch_module, "host_lengths", host_lengths)
    mask = (torch.arange(7)[None, :] < lengths[:, None])[:, None, None, :].to("meta")
    hidden = torch.empty(3, 7, encoder.config.hidden_size, device="meta")
    with torch.inference_mode():
        out = encoder(hidden, attention_mask=mask).last_hidden_state
    assert reads == ["meta"]
    last = 7 if keep_all else Schedule(4, 0.3).counts(7)[-1]
    assert out.shape[:2] == (3, last)
    assert keep_all or last < 7


def test_host_lengths_refuses_left_padding_in_the_same_read():
    valid = torch.tensor([[True, True, False], [False, True, True]])
    with pytest.raises(Exception, match="not right-padded"):
        patch_module.host_lengths(valid)
    assert patch_module.host_lengths(valid[:1]).tolist() == [2]


def test_no_attention_row_is_all_masked():
    """Fused sdpa kernels return NaN for a row with no key to attend to; an all-padding row keeps its first."""
    valid = torch.tensor([[True, True, False], [False, False, False]])
    mask = hf_mask(valid, "sdpa", torch.float16)
    assert mask.shape == (2, 1, 1, 3) and bool(mask[:, 0, 0, :].any(1).all())
    assert mask[0, 0, 0].tolist() == [True, True, False]
    assert hf_mask(torch.ones(2, 3, dtype=torch.bool), "sdpa", torch.float16, all_valid=True) is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_additive_mask_plus_a_logit_stays_finite(dtype):
    """The dtype's minimum plus a negative logit overflows to -inf in fp16; half of it does not."""
    mask = additive_mask(torch.tensor([[True, False]]), dtype)
    assert torch.isfinite(mask + torch.tensor(-1000.0, dtype=dtype)).all()
    assert torch.isfinite((mask + torch.tensor(-1000.0, dtype=dtype)).softmax(-1)).all()


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_half_precision_with_an_all_padding_row_is_finite(impl, dtype, rate):
    model = patch(tiny_bert(impl).to(dtype).eval(), tilt_rate=rate)
    batch = random_batch([7, 5, 3])
    batch["attention_mask"][2] = 0  # a row with no real token at all
    with torch.inference_mode():
        logits = model(**batch).logits
        reference = patch(tiny_bert(impl).to(dtype).eval(), tilt_rate=rate)(**random_batch([7, 5])).logits
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits[:2].float(), reference.float(), atol=2e-2)  # the real rows are unaffected
    assert realised_counts(model)[2].tolist() == [0] * 5
