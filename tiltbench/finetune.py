"""finetune(cfg): fine-tune a BERT-layout model with word-vector elimination on (TiltedBERT's single stage).

AdamW, linear warm-up then linear decay, gradient clipping at 1.0, seeded; evaluation after every epoch.
Elimination is active in training exactly as at inference: top-k + gather pass gradients to the kept tokens.

References: Kachuee & Sharifkhani, arXiv 2201.03327 (abstract: "no extra training steps"); methods.md §2.2, §8.5.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tiltbench.data import DataConfig, batches, encode, load_split
from tiltbench.errors import UserError
from tiltbench.inference import Progress, evaluate
from tiltbench.models import DEFAULT_MODEL, load_model, write_meta
from tiltbench.patch import patch
from tiltbench.report import (
    check_output_dir,
    environment,
    is_checkpoint,
    normal_modes,
    replace_dir,
    write_json_atomic,
)
from tiltbench.schedule import Schedule, Shape


@dataclass(frozen=True)
class TrainConfig:
    output: str
    data: DataConfig = field(default_factory=DataConfig)
    model: str = DEFAULT_MODEL
    tilt_rate: float = 0.0
    shape: Shape = "geometric"
    min_tokens: int = 1
    scorer: str = "acc"
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_batch_size: int = 64
    overwrite: bool = False  # replace an existing tiltbench checkpoint at `output` (anything else is refused)

    def __post_init__(self) -> None:
        Schedule(1, self.tilt_rate, self.shape, None, self.min_tokens)  # validates rate, shape, min tokens
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError("--epochs and --batch-size must be at least 1")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError("--lr must be positive and --warmup-ratio in [0, 1)")


@dataclass
class FinetuneResult:
    output: Path
    metrics: dict[str, float]
    history: list[dict]
    train_seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finetune(cfg: TrainConfig, progress: Progress | None = None) -> FinetuneResult:
    """Fine-tune cfg.model on cfg.data's task at cfg.tilt_rate and save a tiltbench checkpoint to cfg.output."""
    output = check_output_dir(cfg.output, "a tiltbench checkpoint", is_checkpoint, cfg.overwrite)
    seed_everything(cfg.data.seed)
    train_set, info = load_split(cfg.data, "train")
    eval_set, info = load_split(cfg.data, "eval", info)
    model, tokenizer = load_model(cfg.model, info)
    patch(model, cfg.tilt_rate, shape=cfg.shape, min_tokens=cfg.min_tokens, scorer=cfg.scorer)
    pad_id = tokenizer.pad_token_id or 0
    train = encode(train_set, tokenizer, cfg.data.max_seq_len)
    evaluation = encode(eval_set, tokenizer, cfg.data.max_seq_len)

    steps_per_epoch = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    optimizer, scheduler = _optimizer(model, cfg, steps_per_epoch * cfg.epochs)
    generator = torch.Generator().manual_seed(cfg.data.seed)
    history: list[dict] = []
    train_seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        loss = _train_epoch(model, train, pad_id, cfg, optimizer, scheduler, generator, epoch, progress)
        train_seconds += (epoch_seconds := time.perf_counter() - started)
        metrics, _ = evaluate(model, evaluation, info, pad_id, cfg.eval_batch_size)
        history.append({"epoch": epoch, "train_loss": loss, "epoch_seconds": round(epoch_seconds, 2), **metrics})
        if progress:
            description = f"epoch {epoch}/{cfg.epochs} {info.primary_metric} {metrics[info.primary_metric]:.4f}"
            progress(description, epoch * len(train), cfg.epochs * len(train))
    # Written next to the target and moved into place whole: an interrupted save leaves the old folder as it was.
    staged = output.parent / f".{output.name}.partial-{os.getpid()}"
    try:
        _save(staged, model, tokenizer, cfg, info, history, train_seconds, len(train), len(evaluation))
        normal_modes(staged)
        replace_dir(staged, output)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return FinetuneResult(output, history[-1], history, train_seconds)


def _optimizer(model, cfg: TrainConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases and LayerNorm
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def _train_epoch(model, train, pad_id, cfg, optimizer, scheduler, generator, epoch, progress) -> float:
    model.train()
    order = torch.randperm(len(train), generator=generator).tolist()
    total, running, seen = len(train), 0.0, 0
    for step, batch in enumerate(batches(train, cfg.batch_size, pad_id, order=order)):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
        seen = min(seen + cfg.batch_size, total)
        if progress:  # one bar over all epochs
            progress(f"epoch {epoch}/{cfg.epochs} loss {running:.4f}", (epoch - 1) * total + seen, cfg.epochs * total)
    model.eval()
    return round(running, 5)


def _save(out: Path, model, tokenizer, cfg: TrainConfig, info, history, train_seconds, n_train, n_eval) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    schedule = model._tiltbench.schedule
    write_meta(
        out,
        {
            "method": "tilted",
            "scorer": cfg.scorer,
            "schedule": schedule.to_dict(),
            "train_schedule": schedule.to_dict(),
            "task": info.to_dict(),
            "max_seq_len": cfg.data.max_seq_len,
            "seed": cfg.data.seed,
            "train_config": {**asdict(cfg), "n_train": n_train, "n_eval": n_eval},
            "environment": environment(model.config._attn_implementation, cfg.data.seed),
        },
    )
    write_json_atomic(
        out / "metrics.json", {**history[-1], "train_seconds": round(train_seconds, 2), "history": history}
    )
