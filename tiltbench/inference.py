"""Running a (patched) model over encoded examples: logits, realised kept counts, metrics, predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tiltbench.data import TaskInfo, batches, encode, length_sorted
from tiltbench.distributed import on_device
from tiltbench.errors import UserError
from tiltbench.metrics import compute_metrics
from tiltbench.patch import is_patched, realised_counts

Progress = Callable[[str, int, int], None]


@dataclass
class Outputs:
    logits: np.ndarray  # [N, C] in example order
    kept: np.ndarray  # [N, L+1] realised tokens after each layer ([:, 0] = real input length)


def run(
    model: nn.Module, examples: list[dict], pad_id: int, batch_size: int = 64, progress: Progress | None = None
) -> Outputs:
    """Logits and realised counts for every example. Batches are length-sorted (less padding); in fp32 and bf16
    an example's result does not depend on its batch, so the order changes nothing but speed. Dynamic int8 is the
    exception: it scales each Linear's input by the whole batch's range, so its predictions move a little with the
    batching (README, "int8 accuracy depends on the batch"). An unpatched (HF) model keeps every real token in
    every layer."""
    order = length_sorted(examples)
    logits: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for step, batch in enumerate(batches(examples, batch_size, pad_id, order=order)):
            batch.pop("labels")
            batch = on_device(batch, device)
            logits.append(model(**batch).logits.float().cpu().numpy())
            if is_patched(model):
                kept.append(realised_counts(model).cpu().numpy())
            else:  # HF's own model (a dense baseline): every real token through every layer
                lengths = batch["attention_mask"].sum(1, keepdim=True).cpu().numpy()
                kept.append(np.repeat(lengths, model.config.num_hidden_layers + 1, axis=1))
            if progress:
                progress("evaluating", min((step + 1) * batch_size, len(examples)), len(examples))
    inverse = np.argsort(order)
    return Outputs(np.concatenate(logits)[inverse], np.concatenate(kept)[inverse])


def evaluate(
    model: nn.Module,
    examples: list[dict],
    info: TaskInfo,
    pad_id: int,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> tuple[dict[str, float], Outputs]:
    """The task's metrics on `examples` and the raw outputs."""
    outputs = run(model, examples, pad_id, batch_size, progress)
    labels = np.array([e["label"] for e in examples])
    return compute_metrics(info, outputs.logits, labels), outputs


def read_inputs(path: str) -> tuple[list[str], list[str | None]]:
    """Texts (and second texts) to classify from a JSONL file: a "text" on every line, a "text_pair" on every line
    or on none."""
    from pathlib import Path

    from tiltbench.data import read_records

    file = Path(path)
    if not file.is_file():
        raise UserError(f"input file {path!r} does not exist")
    records = read_records(file) if file.suffix.lower() in (".jsonl", ".json") else None
    if records is None:
        raise UserError(f'{path}: --input takes a .jsonl file, one {{"text": ...}} object per line')
    texts, pairs = [], []
    with_pair = records[0][1].get("text_pair") is not None  # null counts as absent
    for line, record in records:
        if not isinstance(record.get("text"), str):
            raise UserError(f"{path}:{line}: each line must be a JSON object with a 'text' string")
        if (record.get("text_pair") is not None) != with_pair:
            raise UserError(
                f"{path}:{line}: 'text_pair' is on some lines but not on others; give it on every line or none"
            )
        texts.append(record["text"])
        pairs.append(str(record["text_pair"]) if with_pair else None)
    return texts, pairs


def predict_texts(
    model: nn.Module,
    tokenizer,
    info: TaskInfo,
    texts: Sequence[str],
    pairs: Sequence[str | None] | None,
    max_seq_len: int,
) -> list[dict]:
    """One dict per input: label, logits and kept_tokens [n0..nL] actually realised."""
    import datasets

    pairs = list(pairs) if pairs is not None else [None] * len(texts)
    rows = {"text": list(texts), "text_pair": pairs, "label": [0.0 if info.regression else 0] * len(texts)}
    examples = encode(datasets.Dataset.from_dict(rows), tokenizer, max_seq_len)
    outputs = run(model, examples, tokenizer.pad_token_id or 0)
    results = []
    for text, logits, kept in zip(texts, outputs.logits, outputs.kept, strict=True):
        label: str | float = float(logits[0]) if info.regression else info.label_names[int(logits.argmax())]
        results.append(
            {"text": text, "label": label, "logits": [float(x) for x in logits], "kept_tokens": [int(k) for k in kept]}
        )
    return results
