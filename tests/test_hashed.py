"""[eel] hashed input embeddings: grams, hash vectors, the least-squares fit, checkpoints without a table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, random_batch

from tiltbench import UserError, patch, realised_counts
from tiltbench.transforms.hashed import (
    HashedConfig,
    HashedEmbedding,
    gram_vectors,
    hashed_embedding,
    install,
    replace_table,
    token_grams,
)


def test_grams_mark_word_starts_continuations_and_keep_special_tokens_whole():
    assert token_grams("##ing", (1, 2, 3), special=False) == [
        "#ing>", "i", "n", "g", "#i", "in", "ng", "g>", "#in", "ing", "ng>"
    ]  # fmt: skip
    word = token_grams("ing", (1, 2, 3), special=False)
    assert word[0] == "<ing>" and "<in" in word and "#in" not in word  # a word start is not a continuation
    assert token_grams("[CLS]", (1, 2, 3), special=True) == ["[CLS]"]
    assert token_grams("ab", (1,), False)[0] != token_grams("ba", (1,), False)[0]  # the whole token differs


def test_gram_vectors_are_deterministic_ternary_and_seeded():
    grams = ["<th", "the", "he>", "#ing>"]
    first = gram_vectors(grams, 256, seed=0)
    assert first.shape == (4, 256) and first.dtype == np.int8
    assert set(np.unique(first)) <= {-1, 0, 1}
    assert np.array_equal(first, gram_vectors(grams, 256, seed=0))
    assert not np.array_equal(first, gram_vectors(grams, 256, seed=1))
    assert not np.array_equal(first[0], first[1])
    many = gram_vectors([f"g{i}" for i in range(200)], 512, seed=0)
    assert abs(float((many == 0).mean()) - 0.5) < 0.02  # 00 and 11 -> 0: half the entries
    assert abs(float(many.mean())) < 0.01  # +1 and -1 equally often


def test_the_fit_recovers_a_table_that_is_linear_in_the_features():
    """When the table is exactly F W + b, least squares gives it back (cosine 1, no error); on a table it cannot
    express, it reports a lower cosine and a relative error."""
    tokens = [f"tok{i}" for i in range(300)] + ["[CLS]"]
    embedding = HashedEmbedding(tokens, {"[CLS]"}, hidden=16, config=HashedConfig(64))
    features = embedding.features(torch.arange(len(tokens)))
    torch.manual_seed(0)
    table = features @ torch.randn(64, 16) + torch.randn(16)
    fit = embedding.fit_to_table(table)
    assert fit["cosine_mean"] > 0.999 and fit["relative_error"] < 1e-3
    assert torch.allclose(embedding(torch.arange(len(tokens))), table, atol=1e-3)
    noise = HashedEmbedding(tokens, {"[CLS]"}, hidden=16, config=HashedConfig(64)).fit_to_table(torch.randn(301, 16))
    assert noise["cosine_mean"] < 0.9 and noise["relative_error"] > 0.3
    with pytest.raises(UserError, match="different models"):
        embedding.fit_to_table(torch.randn(10, 16))


def test_a_fit_weighted_by_task_counts_reproduces_the_rows_the_task_uses():
    """With more rows than features no projection reproduces every row; weighted by the task's token counts, the
    rows the task uses come out better than in the uniform fit and the others worse; the weights are reported."""
    tokens = [f"tok{i}" for i in range(400)] + ["[CLS]"]
    torch.manual_seed(0)
    table = torch.randn(len(tokens), 16)
    counts = torch.zeros(len(tokens))
    counts[:40] = 50.0  # the task's text uses 40 tokens, often
    uniform = HashedEmbedding(tokens, {"[CLS]"}, hidden=16, config=HashedConfig(64))
    weighted = HashedEmbedding(tokens, {"[CLS]"}, hidden=16, config=HashedConfig(64))
    plain_fit, task_fit = uniform.fit_to_table(table), weighted.fit_to_table(table, counts)
    used = torch.arange(40)

    def cosine(embedding: HashedEmbedding, ids: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(embedding(ids), table[ids], dim=1).mean())

    # the weighted fit is the plain fit of a table where each row appears count + 1 times (integer counts here)
    repeats = (counts + 1).long()
    reference = HashedEmbedding(tokens, {"[CLS]"}, hidden=16, config=HashedConfig(64))
    features = torch.cat([reference.features(torch.arange(len(tokens))), torch.ones(len(tokens), 1)], 1)
    solution = torch.linalg.lstsq(features.repeat_interleave(repeats, 0), table.repeat_interleave(repeats, 0)).solution
    assert torch.allclose(weighted.projection.weight, solution[:-1].T, atol=1e-3)
    assert torch.allclose(weighted.projection.bias, solution[-1], atol=1e-3)
    assert cosine(weighted, used) > cosine(uniform, used) + 0.3
    assert cosine(weighted, torch.arange(40, 400)) < cosine(uniform, torch.arange(40, 400))
    assert plain_fit["weights"] == "vocabulary" and "cosine_per_occurrence" not in plain_fit
    assert task_fit["weights"] == "task token counts + 1"
    assert task_fit["cosine_per_occurrence"] == pytest.approx(cosine(weighted, used), abs=1e-3)
    scored = HashedEmbedding(tokens, {"[CLS]"}, hidden=16, config=HashedConfig(64)).fit_to_table(table, counts, False)
    assert scored["weights"] == "vocabulary" and scored["cosine_mean"] == plain_fit["cosine_mean"]
    assert scored["cosine_per_occurrence"] < task_fit["cosine_per_occurrence"]  # counts only score the plain fit
    with pytest.raises(UserError, match="token counts for 3 ids"):
        weighted.fit_to_table(table, torch.ones(3))


def tiny_with_minilm_vocabulary():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return BertForSequenceClassification(config).eval()


def test_the_hashed_model_has_no_table_and_stacks_with_elimination(minilm_tokenizer):
    model = tiny_with_minilm_vocabulary()
    info = replace_table(model, minilm_tokenizer, HashedConfig(64))
    assert info["kind"] == "hashed" and info["vocabulary"] == 30522 and 0 < info["fit"]["cosine_mean"] <= 1
    state = model.state_dict()
    assert "bert.embeddings.word_embeddings.projection.weight" in state
    assert not any(k.endswith("word_embeddings.weight") or k.endswith(".sums") for k in state)
    assert sum(p.numel() for p in model.parameters()) < 0.2e6  # the 30522 x 32 table (1 M) is gone
    patch(model, 0.3)
    batch = random_batch([12, 7], vocab=30000)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert realised_counts(model)[0, -1] < 12


@pytest.mark.parametrize("transform", ["int8", "bf16"])
def test_numerics_transforms_compose_with_hashed_embeddings(transform, minilm_tokenizer):
    from tiltbench.transforms import apply_spec

    model = tiny_with_minilm_vocabulary()
    replace_table(model, minilm_tokenizer, HashedConfig(64))
    batch = random_batch([10, 6], vocab=30000)
    with torch.no_grad():
        reference = model(**batch).logits
        model, _ = apply_spec(model, transform)
        logits = model(**batch).logits.float()
    assert hashed_embedding(model) is not None
    assert torch.allclose(logits, reference, atol=0.1)  # the same model, up to the transform's rounding


def test_save_and_load_give_the_same_predictions_and_plain_transformers_refuses(tmp_path, minilm_tokenizer):
    from transformers import AutoModelForSequenceClassification

    from tiltbench.files import CHECKPOINT_META
    from tiltbench.models import HASHED_WEIGHTS, load_model, save_hashed

    model = tiny_with_minilm_vocabulary()
    settings = replace_table(model, minilm_tokenizer, HashedConfig(64, seed=3))
    torch.nn.init.normal_(model.bert.embeddings.word_embeddings.projection.weight)  # as if fine-tuned
    save_hashed(model, minilm_tokenizer, tmp_path)
    from tiltbench.data import TASKS

    meta = {"embeddings": settings, "method": "tilted", "scorer": "acc", "max_seq_len": 32,
            "schedule": {"shape": "geometric", "tilt_rate": 0.0}, "task": TASKS["sst2"].info.to_dict()}  # fmt: skip
    (tmp_path / CHECKPOINT_META).write_text(json.dumps(meta))
    assert (tmp_path / HASHED_WEIGHTS).is_file() and not (tmp_path / "model.safetensors").exists()
    loaded, _ = load_model(str(tmp_path))
    batch = random_batch([9, 5], vocab=30000)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
    assert hashed_embedding(loaded).config == HashedConfig(64, seed=3)
    with pytest.raises(OSError):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_a_lengthless_vocabulary_or_a_foreign_embedding_is_refused(minilm_tokenizer):
    model = tiny_with_minilm_vocabulary()
    install(model, minilm_tokenizer, HashedConfig(64))
    with pytest.raises(UserError, match="not a table"):
        replace_table(model, minilm_tokenizer, HashedConfig(64))
    with pytest.raises(UserError, match="multiple of 8"):
        HashedConfig(100)


@pytest.mark.skipif(not (DATA_DIR / "sst2").is_dir(), reason="needs ../shared/data")
def test_finetune_with_hashed_embeddings_trains_saves_and_predicts(tmp_path, minilm_tokenizer):
    """The whole path on a tiny model: finetune --embeddings hashed, a checkpoint without a table whose
    tiltbench.json records the hashing and the fit, then predict and offline elimination through load_checkpoint."""
    from transformers import BertConfig, BertForSequenceClassification

    from tiltbench.data import DataConfig
    from tiltbench.finetune import TrainConfig, finetune
    from tiltbench.inference import predict_texts
    from tiltbench.models import HASHED_WEIGHTS, load_checkpoint

    base = tmp_path / "base"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(base)
    minilm_tokenizer.save_pretrained(base)
    out = tmp_path / "ckpt"
    data = DataConfig("sst2", data_dir=str(DATA_DIR), max_train_samples=32, max_eval_samples=16, max_seq_len=32)
    result = finetune(TrainConfig(str(out), data, model=str(base), tilt_rate=0.2, batch_size=16,
                                  embeddings="hashed", hash_dim=64))  # fmt: skip
    assert 0 <= result.metrics["accuracy"] <= 1
    assert (out / HASHED_WEIGHTS).is_file() and not (out / "model.safetensors").exists()
    meta = json.loads((out / "tiltbench.json").read_text())
    assert meta["embeddings"]["kind"] == "hashed" and meta["embeddings"]["dim"] == 64
    assert "cosine_mean" in meta["embeddings"]["fit"]
    assert meta["embeddings"]["fit"]["weights"] == "task token counts + 1"  # --hash-fit task, the default
    model, tokenizer, _, info = load_checkpoint(out)
    assert hashed_embedding(model) is not None
    rows = predict_texts(model, tokenizer, info, ["a fine film", "dull"], None, max_seq_len=32)
    assert [r["label"] in ("negative", "positive") for r in rows] == [True, True]
    from tiltbench.measure import MeasureConfig
    from tiltbench.sweep import SweepConfig, sweep

    measure = MeasureConfig(data_dir=str(DATA_DIR), max_eval_samples=16, latency_examples=8, warmup=0,
                            min_iterations=2, min_seconds=0.0)  # fmt: skip
    report = sweep(SweepConfig((str(out),), knobs=(0.2,), batch_sizes=(4,), run_name="run",
                               results_dir=str(tmp_path), measure=measure, transforms=("fp32", "int8")))  # fmt: skip
    for row in report.rows:
        assert row.embeddings == "hashed" and row.parameters["word_embeddings"] == 64 * 32 + 32
        assert row.memory_mb > row.model_mb  # the vocabulary features are held, not saved
    fp32, int8 = sorted(report.rows, key=lambda r: r.transform)
    assert int8.model_mb < fp32.model_mb
    assert (tmp_path / "run" / "pareto_size.png").is_file()


def test_alignment_loss_is_the_mean_squared_error_over_real_tokens():
    from tiltbench.finetune import _alignment_loss

    torch.manual_seed(0)
    student = [torch.randn(2, 5, 8) for _ in range(3)]
    teacher = [torch.randn(2, 5, 8) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    pairs = zip(student, teacher, strict=True)
    expected = sum(float(((s - t)[0] ** 2).sum() + ((s - t)[1, :2] ** 2).sum()) for s, t in pairs)
    assert float(_alignment_loss(student, teacher, mask)) == pytest.approx(expected / (7 * 8 * 3), rel=1e-5)
    padded = [s.clone() for s in student]
    for s in padded:
        s[1, 2:] = 100.0  # whatever the padding holds
    unpadded = float(_alignment_loss(student, teacher, mask))
    assert float(_alignment_loss(padded, teacher, mask)) == pytest.approx(unpadded)
    assert float(_alignment_loss(teacher, teacher, mask)) == 0.0


@pytest.mark.skipif(not (DATA_DIR / "sst2").is_dir(), reason="needs ../shared/data")
def test_hash_align_epochs_bring_the_hashed_models_hidden_states_towards_the_table_models(tmp_path, minilm_tokenizer):
    """finetune --hash-align-epochs: an alignment stage (no labels, not evaluated) before fine-tuning leaves the
    hashed model's hidden states closer to those of the model with its table than the same run without it."""
    from transformers import BertConfig, BertForSequenceClassification

    from tiltbench.data import DataConfig, collate, encode, load_split
    from tiltbench.finetune import TrainConfig, _alignment_loss, finetune
    from tiltbench.models import load_checkpoint, load_model

    base = tmp_path / "base"
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(base)
    minilm_tokenizer.save_pretrained(base)
    data = DataConfig("sst2", data_dir=str(DATA_DIR), max_train_samples=64, max_eval_samples=16, max_seq_len=32)
    common = dict(model=str(base), batch_size=16, embeddings="hashed", hash_dim=64)
    finetune(TrainConfig(str(tmp_path / "plain"), data, **common))
    aligned = finetune(TrainConfig(str(tmp_path / "aligned"), data, **common, hash_align_epochs=3, hash_align_lr=3e-3))
    assert [h["stage"] for h in aligned.history] == ["align", "align", "align", "fine-tune"]
    assert all("accuracy" not in h for h in aligned.history[:3]) and "accuracy" in aligned.metrics
    meta = json.loads((tmp_path / "aligned" / "tiltbench.json").read_text())
    assert meta["embeddings"]["align"] == {"epochs": 3, "lr": 3e-3, "towards": str(base)}

    teacher, _ = load_model(str(base))
    train, _ = load_split(data, "train")
    batch = collate(encode(train, minilm_tokenizer, 32), 0)
    batch.pop("labels")
    with torch.no_grad():
        goal = teacher(**batch, output_hidden_states=True).hidden_states
        distance = {}
        for name in ("plain", "aligned"):
            model = load_checkpoint(tmp_path / name)[0]
            states = model(**batch, output_hidden_states=True).hidden_states
            distance[name] = float(_alignment_loss(states, goal, batch["attention_mask"]))
    assert distance["aligned"] < 0.8 * distance["plain"]
