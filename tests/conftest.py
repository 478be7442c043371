"""Shared fixtures: a tiny random BERT (fast core tests), the data dir, the packaged MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DATA_DIR = Path(os.environ.get("TILTBENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def tiny_bert(attn_implementation: str = "sdpa", layers: int = 4, num_labels: int = 2):
    """A random BertForSequenceClassification small enough for per-test construction."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        attn_implementation=attn_implementation,
    )
    return BertForSequenceClassification(config).eval()


def random_batch(lengths: list[int], vocab: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """[CLS]=1 ... [SEP]=2 rows of the given real lengths, right-padded with 0."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab, (n,), generator=generator)
        ids[row, 0], ids[row, n - 1] = 1, 2
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of the packaged all-MiniLM-L6-v2 with a fresh 2-class head (seeded)."""
    import transformers

    from tiltbench.models import load_model

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    return load_model("minilm")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The tokenizer of the packaged all-MiniLM-L6-v2 (no model weights loaded)."""
    from transformers import AutoTokenizer

    from tiltbench.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("minilm"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A 2-layer BERT with MiniLM's vocabulary, fine-tuned by tiltbench on 32 SST-2 sentences (seconds)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tiltbench.data import DataConfig
    from tiltbench.finetune import TrainConfig, finetune
    from tiltbench.models import resolve_model

    base = tmp_path_factory.mktemp("tiny") / "base"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(resolve_model("minilm")).save_pretrained(base)
    out = base.parent / "ckpt"
    data = DataConfig("sst2", data_dir=str(DATA_DIR), max_train_samples=32, max_eval_samples=16, max_seq_len=32)
    finetune(TrainConfig(str(out), data, model=str(base), tilt_rate=0.3, batch_size=16))
    return str(out)
