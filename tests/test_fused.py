"""The fused CPU attention kernel (tiltbench/fused.py): the same maths as the unfused path, taken only where it
applies, and a clean fallback where it cannot be built."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from conftest import random_batch, tiny_bert

from tiltbench import fused
from tiltbench.eliminate import RECEIVED_SCORERS, SCORERS, attention_with_scores
from tiltbench.patch import patch


def _kernel():
    kernel = fused.attention_received()
    assert kernel is not None, f"the fused kernel did not build here: {fused.status()}"
    return kernel


@pytest.mark.parametrize("n", [1, 7, 128, 300])  # 300: three query blocks of 128, the last one short
def test_kernel_computes_softmax_attention_its_received_sums_and_diagonal(n):
    B, H, d = 2, 3, 8
    generator = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(B, n, H * d, generator=generator) for _ in range(3))
    scaling = d**-0.5
    heads = lambda x: x.view(B, n, H, d).transpose(1, 2)  # noqa: E731
    probs = (heads(q) @ heads(k).transpose(-1, -2) * scaling).softmax(-1)  # [B,H,n,n]
    context, received, self_attention = _kernel()(q, k, v, H, scaling, fused.QUERY_BLOCK)
    assert torch.allclose(context, (probs @ heads(v)).transpose(1, 2).reshape(B, n, H * d), atol=1e-5)
    assert torch.allclose(received, probs.sum(2), atol=1e-5)
    assert torch.allclose(self_attention, probs.diagonal(dim1=2, dim2=3), atol=1e-6)


@pytest.mark.parametrize("scorer", sorted(SCORERS))
def test_every_scorer_reads_the_same_from_the_kernel_as_from_the_probabilities(scorer):
    _kernel()
    layer = tiny_bert().bert.encoder.layer[0]
    hidden = torch.randn(2, 11, 32, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(2, 11, dtype=torch.bool)
    with torch.no_grad():
        unfused, scores = attention_with_scores(layer, hidden, valid, SCORERS[scorer], [11, 11], True)
        fused_out, fused_scores = attention_with_scores(
            layer, hidden, valid, SCORERS[scorer], [11, 11], True, RECEIVED_SCORERS[scorer]
        )
    assert torch.allclose(fused_out, unfused, atol=1e-5)
    assert torch.allclose(fused_scores, scores, atol=1e-5)


def _kept_positions(model, batch) -> list[torch.Tensor]:
    state = model.bert.encoder._tiltbench
    state.record_states = True
    with torch.no_grad():
        logits = model(**batch).logits
    state.record_states = False
    return logits, [positions for _, positions in state.states]


def test_the_patched_model_keeps_the_same_tokens_with_and_without_the_kernel(monkeypatch):
    _kernel()
    model = patch(tiny_bert(), tilt_rate=0.2)
    calls = []
    original = fused.attention_received
    monkeypatch.setattr(fused, "attention_received", lambda: calls.append(1) or original())
    for lengths in ([40], [33, 33]):  # batch 1, and a batch of equal lengths (no padding either)
        batch = random_batch(lengths)
        logits, kept = _kept_positions(model, batch)
        assert calls, "the unpadded inference forward did not take the kernel"
        monkeypatch.setenv("TILTBENCH_FUSED_ATTENTION", "0")
        unfused_logits, unfused_kept = _kept_positions(model, batch)
        monkeypatch.delenv("TILTBENCH_FUSED_ATTENTION")
        assert all(torch.equal(a, b) for a, b in zip(kept, unfused_kept, strict=True))
        assert kept[-1].shape[1] < lengths[0]  # tokens did leave
        assert torch.allclose(logits, unfused_logits, atol=1e-5)
        calls.clear()


def test_padding_gradients_training_mode_and_bf16_take_the_unfused_path(monkeypatch):
    model = patch(tiny_bert(), tilt_rate=0.2)
    calls = []
    # asked for only once every other condition holds (it is the last test of the chain)
    monkeypatch.setattr(fused, "attention_received", lambda: calls.append(1))
    with torch.no_grad():
        model(**random_batch([20]))
    assert len(calls) == 4  # the control: an unpadded inference forward in fp32 asks in each eliminating layer
    calls.clear()
    with torch.no_grad():
        model(**random_batch([20, 13]))  # padding: per-row masks
    model(**random_batch([20]))  # autograd on: the kernel has no backward
    with torch.no_grad():
        model.train()  # attention dropout
        model(**random_batch([20]))
        model.eval().to(torch.float64)  # the kernel attends fp32 and bf16 only
        model(**random_batch([20]))
    assert calls == []


def test_bf16_is_attended_in_fp32_and_keeps_bf16_activations():
    _kernel()
    model = patch(tiny_bert(), tilt_rate=0.2).to(torch.bfloat16)
    batch = random_batch([40])
    fp32 = patch(tiny_bert(), tilt_rate=0.2)
    with torch.no_grad():
        logits = model(**batch).logits
        reference = fp32(**batch).logits  # the same weights in fp32: bf16 rounds, the ranking holds
    assert logits.dtype == torch.bfloat16
    assert torch.allclose(logits.float(), reference, atol=0.05)
    q, k, v = (torch.randn(1, 40, 32, generator=torch.Generator().manual_seed(i)) for i in range(3))
    expected = _kernel()(q, k, v, 4, 8**-0.5, fused.QUERY_BLOCK)
    context, received, _ = _kernel()(q.bfloat16(), k.bfloat16(), v.bfloat16(), 4, 8**-0.5, fused.QUERY_BLOCK)
    assert context.dtype == torch.bfloat16 and received.dtype == torch.float32
    assert torch.allclose(context.float(), expected[0], atol=0.05)
    assert torch.allclose(received, expected[1], atol=0.05)


def test_every_scorer_has_its_received_form():
    assert set(RECEIVED_SCORERS) == set(SCORERS)


def test_the_build_is_named_after_the_cpu():
    fingerprint = fused.cpu_fingerprint()
    assert len(fingerprint) == 8 and int(fingerprint, 16) >= 0
    assert fingerprint == fused.cpu_fingerprint()


def test_the_environment_switch_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv("TILTBENCH_FUSED_ATTENTION", "0")
    assert fused.attention_received() is None
    assert fused.status().startswith("disabled")


def test_a_kernel_that_cannot_be_built_falls_back_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(fused, "_status", None)
    monkeypatch.setattr(fused, "_op", None)
    with pytest.warns(RuntimeWarning, match="Ninja is required"):
        assert fused.attention_received() is None
    assert fused.status() == "unavailable (Ninja is required to load C++ extensions)"
    from tiltbench.environment import environment

    assert environment()["fused_attention"] == fused.status()  # every result records it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second build attempt, no second warning
        assert fused.attention_received() is None


def test_fvcore_counts_the_attention_matmuls_that_the_kernel_hides(monkeypatch):
    from tiltbench.flops import fvcore_macs

    _kernel()
    model = patch(tiny_bert(), tilt_rate=0.2)
    batch = random_batch([40])
    total, by_operator = fvcore_macs(model, batch["input_ids"], batch["attention_mask"])
    assert fused.enabled()  # held off only for the trace
    # the eliminating layers' PV product: a matmul of [H, n, n] probabilities, which the kernel would hide
    assert by_operator.get("matmul", 0) > 0
    monkeypatch.setenv("TILTBENCH_FUSED_ATTENTION", "0")
    assert fvcore_macs(model, batch["input_ids"], batch["attention_mask"])[0] == total


def test_the_environments_ninja_is_found_without_an_activated_environment(monkeypatch):
    import shutil

    monkeypatch.setenv("PATH", "/nonexistent")
    fused.ninja_on_path()
    found = shutil.which("ninja")
    assert found is not None and not found.startswith("/usr/")
    fused.ninja_on_path()  # idempotent: added once
    assert os.environ["PATH"].split(os.pathsep).count(os.path.dirname(found)) == 1
