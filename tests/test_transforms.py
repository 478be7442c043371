"""The transform interface: a registered rewrite applies in order and elimination still stacks on it."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_bert

from tiltbench import Schedule, UserError, patch, realised_counts
from tiltbench.transforms import TRANSFORMS, Transform, apply_transforms, register


@pytest.fixture
def zero_ffn_bias():
    """A toy transform in the shape [stack]'s int8 will take: it rewrites the loaded model's FFN Linears."""

    @register
    class ZeroFfnBias(Transform):
        name = "zero-ffn-bias"

        def apply(self, model: torch.nn.Module) -> torch.nn.Module:
            for layer in model.bert.encoder.layer:
                torch.nn.init.zeros_(layer.intermediate.dense.bias)
            return model

    yield ZeroFfnBias
    TRANSFORMS.pop(ZeroFfnBias.name)


def test_a_transform_applies_and_elimination_stacks_on_it(zero_ffn_bias):
    model = tiny_bert()
    model, configs = apply_transforms(model, ["zero-ffn-bias"])
    assert configs == [{"name": "zero-ffn-bias"}]
    assert all(not layer.intermediate.dense.bias.detach().any() for layer in model.bert.encoder.layer)
    patch(model, Schedule(model.config.num_hidden_layers, 0.3))
    batch = random_batch(lengths=[12, 7])
    with torch.no_grad():
        out = model.bert(**batch)
    counts = realised_counts(model)
    assert counts[0, -1] < 12 and out.last_hidden_state.shape[1] == int(counts[:, -1].max())  # tokens left


def test_an_unknown_transform_is_one_user_error():
    with pytest.raises(UserError, match="unknown transform 'int4'"):
        apply_transforms(tiny_bert(), ["int4"])
