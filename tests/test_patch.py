import copy
import importlib

import pytest
import torch
from conftest import random_batch, tiny_bert

from tiltbench import Schedule, UserError, patch, realised_counts, set_schedule, unpatch

IMPLS = ["sdpa", "eager"]


@pytest.mark.parametrize("impl", IMPLS)
def test_tau_zero_equals_hf(impl):
    reference = tiny_bert(impl)
    model = patch(copy.deepcopy(reference), tilt_rate=0.0)
    batch = random_batch([12, 7, 3])
    with torch.inference_mode():
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-6)
    assert realised_counts(model).tolist() == [[12] * 5, [7] * 5, [3] * 5]


def _ffn_tokens(model) -> list[int]:
    """Word vectors each layer's FFN computes (padding included, if any), recorded by hooks independent of
    tiltbench."""
    tokens: list[int] = []
    for layer in model.bert.encoder.layer:
        layer.intermediate.register_forward_hook(lambda m, args, out: tokens.append(args[0].shape[:-1].numel()))
    return tokens


@pytest.mark.parametrize("impl", IMPLS)
def test_shapes_follow_schedule(impl):
    model = patch(tiny_bert(impl), tilt_rate=0.3)
    tokens = _ffn_tokens(model)
    lengths = [20, 9]
    with torch.inference_mode():
        model(**random_batch(lengths))
    expected = [Schedule(4, 0.3).counts(n) for n in lengths]
    assert realised_counts(model).tolist() == expected
    # the batch is padded to its longest kept row, and the FFN of layer l runs on the kept tokens alone
    widths = [max(e[layer] for e in expected) for layer in range(1, 5)]
    assert model._tiltbench.widths == [20, *widths]
    assert tokens == [sum(e[layer] for e in expected) for layer in range(1, 5)]


def test_cls_kept_and_padding_goes_first(monkeypatch):
    model = patch(tiny_bert(), tilt_rate=0.5)
    kept_positions: list[torch.Tensor] = []
    patch_module = importlib.import_module("tiltbench.patch")  # `tiltbench.patch` is the function
    original = patch_module.keep_indices

    def spy(scores, valid, n_keep, width=None):
        idx, new_valid = original(scores, valid, n_keep, width)
        kept_positions.append(idx.masked_fill(~new_valid, -1))
        return idx, new_valid

    monkeypatch.setattr(patch_module, "keep_indices", spy)
    with torch.inference_mode():
        batch = random_batch([16, 5])
        batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, 8))  # extra padding
        batch["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, 8))
        model(**batch)
    first = kept_positions[0]
    assert (first[:, 0] == 0).all()  # [CLS] at index 0
    assert first[0][first[0] >= 0].max() < 16 and first[1][first[1] >= 0].max() < 5  # only real tokens kept
    for positions in first:
        kept = positions[positions >= 0]
        assert torch.equal(kept, kept.sort().values)  # original order


@pytest.mark.parametrize("impl", IMPLS)
def test_example_alone_equals_example_in_padded_batch(impl):
    model = patch(tiny_bert(impl), tilt_rate=0.25)
    lengths = [30, 11, 4, 19]
    batch = random_batch(lengths, seed=3)
    with torch.inference_mode():
        together = model(**batch).logits
        for row, n in enumerate(lengths):
            alone = model(
                input_ids=batch["input_ids"][row : row + 1, :n],
                attention_mask=batch["attention_mask"][row : row + 1, :n],
            ).logits
            assert torch.allclose(alone[0], together[row], atol=1e-4)


def test_set_schedule_retargets_without_reload_and_unpatch_restores():
    reference = tiny_bert()
    model = patch(copy.deepcopy(reference), tilt_rate=0.4)
    batch = random_batch([10, 6])
    with torch.inference_mode():
        pruned = model(**batch).logits
        set_schedule(model, 0.0)
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-6)
        set_schedule(model, [8, 4, 2, 1])
        model(**batch)
        assert realised_counts(model).tolist() == [[10, 8, 4, 2, 1], [6, 6, 4, 2, 1]]
        unpatch(model)
        assert type(model.bert.encoder).__name__ == "BertEncoder"
        assert not torch.allclose(pruned, model(**batch).logits)
    assert set(model.state_dict()) == set(reference.state_dict())


def test_patch_errors():
    model = patch(tiny_bert(), tilt_rate=0.1)
    with pytest.raises(UserError, match="already patched"):
        patch(model)
    with pytest.raises(UserError, match="BERT"):
        patch(torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="scorer"):
        patch(tiny_bert(), scorer="magic")
    with pytest.raises(UserError, match="not patched"):
        set_schedule(tiny_bert(), 0.1)


@pytest.mark.parametrize("scorer", ["acc", "acc-nodiag", "acc-norm"])
def test_training_backward_through_elimination(scorer):
    model = patch(tiny_bert(), tilt_rate=0.3, scorer=scorer).train()
    batch = random_batch([14, 9])
    loss = model(**batch, labels=torch.tensor([0, 1])).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_minilm_tau_zero_and_batch_invariance(minilm):
    model, tokenizer = minilm
    reference = copy.deepcopy(model)
    patched = patch(copy.deepcopy(model), tilt_rate=0.0)
    texts = [
        "it 's a charming and often affecting journey . ",
        "unflinchingly bleak and desperate ",
        "the acting , costumes , music , cinematography and sound are all astounding given the production 's "
        "austere locales . ",
    ]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert (patched(**batch).logits - reference(**batch).logits).abs().max() <= 1e-4
        set_schedule(patched, 0.3)
        together = patched(**batch).logits
        assert realised_counts(patched)[:, -1].tolist() == [
            Schedule(6, 0.3).counts(len(tokenizer(t)["input_ids"]))[-1] for t in texts
        ]
        for row, text in enumerate(texts):
            alone = patched(**tokenizer([text], return_tensors="pt")).logits
            assert (alone[0] - together[row]).abs().max() <= 1e-4


def _tiny(family: str):
    import transformers

    torch.manual_seed(0)
    sizes = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        num_labels=2,
    )
    config_class, model_class = {
        "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
        "electra": (transformers.ElectraConfig, transformers.ElectraForSequenceClassification),
    }[family]
    extra = {"embedding_size": 32} if family == "electra" else {}
    return model_class(config_class(**sizes, **extra)).eval()


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_other_bert_layout_families(family):
    reference = _tiny(family)
    model = patch(copy.deepcopy(reference), tilt_rate=0.0)
    batch = random_batch([12, 5])
    batch["input_ids"] = batch["input_ids"].clamp(min=3)  # RoBERTa's pad id is 1: keep real tokens off it
    with torch.inference_mode():
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-6)
        set_schedule(model, 0.3)
        model(**batch)
    assert realised_counts(model).tolist() == [Schedule(3, 0.3).counts(12), Schedule(3, 0.3).counts(5)]


def test_chunked_attention_equals_one_chunk(monkeypatch):
    batch = random_batch([20, 13, 7, 3], seed=5)
    model = patch(tiny_bert(), tilt_rate=0.3)
    with torch.inference_mode():
        whole = model(**batch).logits
        monkeypatch.setattr("tiltbench.eliminate.CHUNK_BYTES", 1)  # one batch row per chunk
        chunked = model(**batch).logits
    assert torch.allclose(whole, chunked, atol=1e-6)


# --- realised counts against an independent reference ---------------------------------------------


def _by_hand(model, ids: torch.Tensor, tau: float) -> tuple[torch.Tensor, list[int]]:
    """TiltedBERT for one unpadded example, written out with HF's own eager modules: HF's attention returns its
    probabilities, the ACC score, the count formula and the top-k are done here, independently of tiltbench."""
    import math

    bert = model.bert
    hidden = bert.embeddings(input_ids=ids)
    counts = [ids.shape[1]]
    for layer_index, layer in enumerate(bert.encoder.layer, 1):
        attended, probs = layer.attention(hidden, None)  # eager: probabilities [1, H, n, n] come back
        keep = min(counts[-1], max(1, math.ceil(counts[0] * (1 - tau) ** layer_index - 1e-9)))
        if keep < hidden.shape[1]:
            score = probs[0].sum(dim=(0, 1))  # attention each token receives, over heads and queries
            score[0] = float("inf")  # [CLS] stays
            kept = score.topk(keep).indices.sort().values
            attended = attended[:, kept]
        hidden = layer.output(layer.intermediate(attended), attended)
        counts.append(hidden.shape[1])
    return model.classifier(bert.pooler(hidden)), counts


@pytest.mark.parametrize("tau", [0.2, 0.45])
def test_realised_counts_and_logits_match_a_hand_written_reference(tau):
    reference = tiny_bert("eager")
    model = patch(copy.deepcopy(reference), tilt_rate=tau)
    lengths = [23, 9, 16, 4]
    batch = random_batch(lengths, seed=7)
    with torch.inference_mode():
        logits = model(**batch).logits
        realised = realised_counts(model).tolist()
        for row, n in enumerate(lengths):
            expected_logits, expected_counts = _by_hand(reference, batch["input_ids"][row : row + 1, :n], tau)
            assert realised[row] == expected_counts
            assert torch.allclose(logits[row], expected_logits[0], atol=1e-5)
    assert any(c[-1] < c[0] for c in realised)  # something was eliminated


def test_realised_counts_report_what_was_kept_not_the_plan(monkeypatch):
    model = patch(tiny_bert(), tilt_rate=0.3)
    lengths = [12, 5]
    # A plan asking the 5-token row to keep 8 tokens in layers 2-4 (a data-dependent method could): the gather
    # can only keep its 5 real tokens, and realised_counts must say 5.
    plan = torch.tensor([[12, 12, 8, 6, 4], [5, 5, 8, 8, 8]])
    monkeypatch.setattr(type(model._tiltbench), "counts_for", lambda self, n0: plan)
    with torch.inference_mode():
        model(**random_batch(lengths))
    assert realised_counts(model).tolist() == [[12, 12, 8, 6, 4], [5, 5, 5, 5, 5]]


# --- padding side, per-layer outputs, pickling, keep-all -------------------------------------------


def _left_padded(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each row's real tokens moved to the right end (the layout of padding_side='left')."""
    out = {k: torch.zeros_like(v) for k, v in batch.items()}
    for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        for key in out:
            out[key][row, out[key].shape[1] - n :] = batch[key][row, :n]
    return out


@pytest.mark.parametrize("tau", [0.0, 0.3])
def test_left_padding_is_refused_and_right_padding_is_exact(tau):
    model = patch(tiny_bert(), tilt_rate=tau)
    lengths = [14, 6]
    right = random_batch(lengths, seed=2)
    with torch.inference_mode():
        together = model(**right).logits
        for row, n in enumerate(lengths):  # right padding: each row's logits equal its unpadded logits
            alone = model(input_ids=right["input_ids"][row : row + 1, :n]).logits
            assert torch.allclose(alone[0], together[row], atol=1e-5)
        with pytest.raises(UserError, match="not right-padded"):
            model(**_left_padded(right))


def test_left_padding_tokenizer_is_refused(minilm_tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    model = patch(BertForSequenceClassification(config).eval(), tilt_rate=0.3)
    minilm_tokenizer.padding_side = "left"
    try:
        batch = minilm_tokenizer(
            ["a long enough sentence to pad the other", "short"], padding=True, return_tensors="pt"
        )
    finally:
        minilm_tokenizer.padding_side = "right"
    with torch.inference_mode(), pytest.raises(UserError, match="padding_side='right'"):
        model(**batch)


@pytest.mark.parametrize("flag", ["output_hidden_states", "output_attentions"])
def test_per_layer_outputs_are_refused_under_elimination(flag):
    model = patch(tiny_bert("eager"), tilt_rate=0.3)
    batch = random_batch([10, 6])
    with torch.inference_mode():
        with pytest.raises(UserError, match=flag):
            model(**batch, **{flag: True})
        model.config.update({flag: True})  # the config default asks for them too
        with pytest.raises(UserError, match=flag):
            model(**batch)
        model(**batch, **{flag: False})  # the call overrides the config
        set_schedule(model, 0.0)  # HF's own forward: HF's outputs, one per layer
        out = model(**batch)
    assert len(out.hidden_states if flag == "output_hidden_states" else out.attentions) >= 4


def test_torch_save_of_a_patched_model_round_trips(tmp_path):
    patch_module = importlib.import_module("tiltbench.patch")
    model = patch(tiny_bert(), tilt_rate=0.3)
    batch = random_batch([11, 7])
    with torch.inference_mode():
        before = model(**batch).logits
    torch.save(model, tmp_path / "model.pt")
    patch_module._CLASS_CACHE.clear()  # as in a fresh process: the patched class must be rebuilt
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert type(loaded.bert.encoder).__name__ == "TiltedBertEncoder"
    assert loaded._tiltbench is loaded.bert.encoder._tiltbench and loaded._tiltbench.schedule == Schedule(4, 0.3)
    with torch.inference_mode():
        assert torch.allclose(loaded(**batch).logits, before, atol=1e-6)
    assert realised_counts(loaded).tolist() == [Schedule(4, 0.3).counts(11), Schedule(4, 0.3).counts(7)]
    unpatch(loaded)
    assert type(loaded.bert.encoder).__name__ == "BertEncoder"


@pytest.mark.parametrize("impl", IMPLS)
def test_keep_all_runs_the_eliminating_path_and_keeps_every_token(impl, monkeypatch):
    reference = tiny_bert(impl)
    model = patch(copy.deepcopy(reference), tilt_rate=0.0)
    set_schedule(model, 0.0, keep_all=True)
    calls = []
    patch_module = importlib.import_module("tiltbench.patch")
    original = patch_module.attention_with_scores
    monkeypatch.setattr(patch_module, "attention_with_scores", lambda *a: calls.append(1) or original(*a))
    batch = random_batch([12, 5, 9])
    batch = {k: torch.nn.functional.pad(v, (0, 4)) for k, v in batch.items()}  # padding beyond the longest row
    with torch.inference_mode():
        logits = model(**batch).logits
        assert torch.allclose(logits, reference(**batch).logits, atol=1e-5)
    assert len(calls) == 4  # every layer
    assert realised_counts(model).tolist() == [[12] * 5, [5] * 5, [9] * 5]
    assert model._tiltbench.widths == [16, 12, 12, 12, 12]  # the first gather drops the batch's padding
    with pytest.raises(UserError, match="keep-all"):
        set_schedule(model, 0.2, keep_all=True)
    set_schedule(model, 0.2)
    assert not model._tiltbench.keep_all


def test_inference_mode_then_no_grad():
    """The probability workspace made under inference_mode must not be reused (in-place) under no_grad."""
    model = patch(tiny_bert("sdpa"), tilt_rate=0.3)
    batch = random_batch([12, 7])
    with torch.inference_mode():
        first = model(**batch).logits.clone()
    with torch.no_grad():
        second = model(**batch).logits
    assert torch.allclose(first, second, atol=1e-6)


@pytest.mark.parametrize("scorer", ["acc", "acc-nodiag", "acc-norm"])
@pytest.mark.parametrize("lengths", [[13], [11, 11, 11]])
def test_the_unpadded_inference_path_equals_the_general_one(scorer, lengths):
    """Batch 1 (or rows of one length) at inference takes the short path (no masks, no select, top_tokens); with
    autograd on the same forward takes the general one. Same tokens kept, same outputs."""
    model = tiny_bert()
    patch(model, Schedule(model.config.num_hidden_layers, 0.3), scorer=scorer)
    batch = random_batch(lengths=lengths, seed=3)
    with torch.no_grad():
        short = model.bert(**batch).last_hidden_state
        short_counts = realised_counts(model).clone()
    with torch.enable_grad():
        general = model.bert(**batch).last_hidden_state.detach()
    assert torch.equal(short_counts, realised_counts(model)) and short_counts[0, -1] < lengths[0]
    assert short.shape == general.shape
    assert torch.allclose(short, general, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keep_all", [False, True])
def test_a_padded_batch_runs_its_linears_on_its_real_tokens_alone(impl, keep_all):
    """At inference an eliminating forward (keep-all too) feeds every Linear of a padded batch its real tokens
    alone: the query projection and the FFN see sum(lengths) rows, not B x the longest. Outputs equal the padded
    layout's, which autograd keeps (training's path), on every real slot."""
    model = tiny_bert(impl)
    patch(model, tilt_rate=0.3)
    if keep_all:  # measure's attribution variant: the eliminating path, nothing removed
        set_schedule(model, 0.0, keep_all=True)
    lengths = [30, 11, 4, 19]
    batch = random_batch(lengths, seed=5)
    seen: dict[str, list[tuple[int, ...]]] = {"query": [], "ffn": []}
    layer = model.bert.encoder.layer[0]
    layer.attention.self.query.register_forward_hook(lambda m, i, o: seen["query"].append(tuple(i[0].shape)))
    layer.intermediate.dense.register_forward_hook(lambda m, i, o: seen["ffn"].append(tuple(i[0].shape)))
    with torch.no_grad():
        packed = model.bert(**batch).last_hidden_state
        counts = realised_counts(model).clone()
    with torch.enable_grad():
        padded = model.bert(**batch).last_hidden_state.detach()
    assert torch.equal(counts, realised_counts(model))
    hidden = model.config.hidden_size
    kept = counts[:, 1].tolist()  # what layer 0's FFN runs on
    assert seen["query"] == [(sum(lengths), hidden), (4, 30, hidden)]
    assert seen["ffn"] == [(sum(kept), hidden), (4, max(kept), hidden)]
    if keep_all:
        assert kept == lengths
    for row, n in enumerate(counts[:, -1].tolist()):
        assert torch.allclose(packed[row, :n], padded[row, :n], atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_layers_that_keep_every_token_skip_hf_chunking_wrapper_and_match_it(impl, monkeypatch):
    """dense_layer calls attention, intermediate and output directly: bit-equal to BertLayer's own call, without
    transformers' apply_chunking_to_forward (inspect.signature per call); with FFN chunking on, HF's call runs."""
    import transformers.models.bert.modeling_bert as bert

    from tiltbench.patch import dense_layer

    calls = []
    original = bert.apply_chunking_to_forward
    monkeypatch.setattr(bert, "apply_chunking_to_forward", lambda *a: calls.append(1) or original(*a))
    model = tiny_bert(impl)
    layer = model.bert.encoder.layer[1]
    hidden = torch.randn(2, 9, model.config.hidden_size)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    from tiltbench.eliminate import hf_mask

    mask = hf_mask(valid, impl, hidden.dtype)
    with torch.no_grad():
        reference = layer(hidden, mask)
        assert len(calls) == 1
        assert torch.equal(dense_layer(layer, hidden, mask), reference)
        assert len(calls) == 1  # the direct path never entered the wrapper
        layer.train()
        torch.manual_seed(3)
        dropped = layer(hidden, mask)
        torch.manual_seed(3)
        assert torch.equal(dense_layer(layer, hidden, mask), dropped)  # dropout draws in the same order
        layer.eval()
        layer.chunk_size_feed_forward = 3  # must divide the width (9)
        assert torch.allclose(dense_layer(layer, hidden, mask), reference, atol=1e-6)
        assert len(calls) == 3  # the training-mode reference, then chunking configured: HF's own call ran
        layer.chunk_size_feed_forward = 0
    # in the patched model, a schedule that drops only in the last layer runs the first layers through dense_layer
    calls.clear()
    patched = patch(copy.deepcopy(model), tilt_rate=[9, 9, 9, 5])
    with torch.inference_mode():
        patched(**random_batch([9, 7]))
        assert calls == []
        hooked = []  # a hook on a layer that keeps its tokens fires: that layer then runs HF's own call
        patched.bert.encoder.layer[0].register_forward_hook(lambda *a: hooked.append(1))
        patched(**random_batch([9, 7]))
    assert hooked == [1] and calls == [1]
    calls.clear()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None)  # a global hook: HF's call
    try:
        with torch.no_grad():
            dense_layer(layer, hidden, mask)
    finally:
        handle.remove()
    assert calls == [1]
    model.gradient_checkpointing_enable()
    model.train()
    calls.clear()
    dense_layer(layer, hidden, mask)  # checkpointing is the layer's own call's business
    assert calls == [1]


@pytest.mark.parametrize("family", ["megatron-bert", "esm"])
def test_layers_with_more_than_bertlayers_three_parts_are_refused(family):
    """MegatronBERT and ESM put a LayerNorm before the FFN; the eliminating layer calls attention, intermediate and
    output only, so it would silently skip it: refused with one clear error."""
    import transformers

    config_class, model_class = {
        "megatron-bert": (transformers.MegatronBertConfig, transformers.MegatronBertForSequenceClassification),
        "esm": (transformers.EsmConfig, transformers.EsmForSequenceClassification),
    }[family]
    sizes = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    extra = {"pad_token_id": 1} if family == "esm" else {}
    model = model_class(config_class(**sizes, **extra)).eval()
    with pytest.raises(UserError, match="besides attention, intermediate and output"):
        patch(model, tilt_rate=0.2)


@pytest.mark.parametrize(
    ("lengths", "grad"),
    [([20, 13, 7], True), ([20, 13, 7], False), ([20], False)],
    ids=["padded-train", "padded-inference", "batch1-short-path"],
)
def test_recorded_states_say_where_every_kept_word_vector_came_from(lengths, grad):
    """record_states (finetune --distill-hidden under elimination): each layer's kept word vectors with their input
    positions. Up to and through the first layer that removes tokens the eliminating model computes what the dense
    one does (the gather sits between attention and the per-token FFN), so there each kept vector must equal the
    dense model's vector at its recorded position; positions only ever lose tokens, [CLS] first."""
    model = tiny_bert(layers=4)
    batch = random_batch(lengths)
    with torch.no_grad():
        dense = model(**batch, output_hidden_states=True).hidden_states
    patch(model, tilt_rate=0.3)
    model._tiltbench.record_states = True
    with torch.enable_grad() if grad else torch.no_grad():
        model(**batch)
    state = model._tiltbench
    assert len(state.states) == len(state.valids) == 5
    first = next(i for i in range(1, 5) if state.states[i][0].shape[1] < state.states[i - 1][0].shape[1])
    for i, ((hidden, where), valid) in enumerate(zip(state.states, state.valids, strict=True)):
        assert where.shape == valid.shape == hidden.shape[:2]
        for row in range(len(lengths)):
            kept = where[row][valid[row]].tolist()
            assert kept[0] == 0 and kept == sorted(set(kept)) and len(kept) == int(valid[row].sum())
            if i > 0:  # a removed token never comes back
                assert set(kept) <= set(state.states[i - 1][1][row][state.valids[i - 1][row]].tolist())
            if i <= first:
                torch.testing.assert_close(hidden[row][valid[row]], dense[i][row, kept], atol=1e-5, rtol=1e-4)
    assert first < 4 and where.shape[1] < max(lengths)  # tokens did leave
    model._tiltbench.record_states = False
    with torch.no_grad():
        model(**batch)
    assert model._tiltbench.states is None  # nothing recorded unless asked
