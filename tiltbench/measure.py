"""Measure one checkpoint at one tilt rate and batch size against the dense baselines, in the same process.

Variants, all on the same real dev-set inputs (dataset order), the same threads, interleaved batch by batch:
  tiltbench      the patched checkpoint at the row's tilt rate (dynamic padding, or --pad-to-max)
  dense-dynamic  the plain HF model, its default attention, padded to the batch maximum: the headline baseline
  dense-padded   the plain HF model on inputs padded to --max-seq-len, as papers measure
  dense-eager    the plain HF model with eager attention (dynamic padding)
Speedup against a baseline = its robust total / tiltbench's: per batch, the median over (at least 3) rounds,
summed over the batches; the same batches for every variant, so the total is content-weighted. tiltbench and
dense-dynamic are timed as one interleaved pair; dense-padded and dense-eager are timed interleaved with a
dense-dynamic anchor and their speedups chained through it (a heavy baseline slows whatever runs near it).

References: optimum-benchmark (report layout, percentiles); methods.md §9.5 (why measured != FLOP ratio).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tiltbench.data import DataConfig, collate, encode, load_split
from tiltbench.errors import UserError
from tiltbench.flops import fvcore_macs
from tiltbench.inference import Progress, evaluate
from tiltbench.latency import Variant, robust_total, time_interleaved
from tiltbench.models import load_checkpoint, load_model
from tiltbench.patch import patch, realised_counts, set_schedule, unpatch
from tiltbench.schedule import Schedule
from tiltbench.speedup import ModelDims, encoder_macs

BASELINES = ("dense-dynamic", "dense-padded", "dense-eager")


@dataclass(frozen=True)
class MeasureConfig:
    """How to time one checkpoint; data fields left None come from the checkpoint."""

    task: str | None = None
    data_dir: str | None = None
    eval_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_eval_samples: int | None = None  # examples for the task metric (seeded subset)
    max_seq_len: int | None = None
    seed: int = 0
    latency_examples: int = 256  # the first N evaluation examples are the timing inputs
    warmup: int = 2  # batches per variant, discarded
    min_iterations: int = 10  # timed batches per variant, at least
    min_seconds: float = 2.0  # timed seconds per variant, at least
    min_rounds: int = 3  # full passes over the timing batches, at least (robust per-batch medians)
    pad_to_max: bool = False
    fvcore: bool = True
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("latency_examples", "min_iterations", "min_rounds", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.min_seconds < 0:
            raise UserError("--warmup and --min-seconds must be >= 0")


@dataclass
class CheckpointBench:
    """Everything loaded once per checkpoint: the patched model, the two dense baselines, inputs, metric cache."""

    checkpoint: str
    cfg: MeasureConfig
    progress: Progress | None = None
    metrics: dict[float, dict[str, float]] = field(default_factory=dict)
    fvcore_rows: dict[float, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.model, self.tokenizer, self.meta, self.info = load_checkpoint(self.checkpoint)
        self.dense, _ = load_model(self.checkpoint)
        self.eager, _ = load_model(self.checkpoint, attn_implementation="eager")
        self.data = DataConfig(
            cfg.task or self.info.name,
            cfg.data_dir,
            None,
            cfg.eval_file,
            cfg.text_column,
            cfg.text_pair_column,
            cfg.label_column,
            None,
            cfg.max_eval_samples,
            cfg.max_seq_len or self.meta["max_seq_len"],
            cfg.seed,
        )
        eval_set, self.info = load_split(self.data, "eval", self.info)
        self.examples = encode(eval_set, self.tokenizer, self.data.max_seq_len)
        self.timing_examples = self.examples[: cfg.latency_examples]
        self.dims = ModelDims.from_config(self.model.config)
        base = self.model._tiltbench.schedule
        self.shape = "geometric" if base.shape == "list" else base.shape
        self.min_tokens = base.min_tokens
        self.pad_id = self.tokenizer.pad_token_id or 0

    def schedule(self, tilt_rate: float) -> Schedule:
        return Schedule(self.dims.layers, tilt_rate, self.shape, None, self.min_tokens)

    def metric(self, tilt_rate: float) -> dict[str, float]:
        """Task metrics at a tilt rate on the evaluation set (cached: they do not depend on the batch size)."""
        if tilt_rate not in self.metrics:
            set_schedule(self.model, self.schedule(tilt_rate))
            self.metrics[tilt_rate], _ = evaluate(
                self.model, self.examples, self.info, self.pad_id, self.cfg.eval_batch_size
            )
        return self.metrics[tilt_rate]

    def fvcore(self, tilt_rate: float) -> dict:
        """fvcore vs analytic MACs on the first timing example alone (eager attention, so fvcore sees the matmuls)."""
        if tilt_rate not in self.fvcore_rows:
            example = collate(self.timing_examples[:1], self.pad_id)
            schedule = self.schedule(tilt_rate)
            patch(self.eager, schedule, scorer=self.meta["scorer"])
            try:
                total, by_op = fvcore_macs(self.eager, example["input_ids"], example["attention_mask"])
            finally:
                unpatch(self.eager)
            analytic = encoder_macs(schedule.counts(int(example["attention_mask"].sum())), self.dims)
            self.fvcore_rows[tilt_rate] = {
                "tokens": int(example["attention_mask"].sum()),
                "fvcore_macs": total,
                "analytic_encoder_macs": analytic,
                "relative_difference": round(total / analytic - 1, 5),
                "fvcore_by_operator": by_op,
                "unit": "MAC",
            }
        return self.fvcore_rows[tilt_rate]

    def batches(self, batch_size: int, padded: bool) -> list[dict[str, torch.Tensor]]:
        pad_to = self.data.max_seq_len if padded else None
        out = []
        for start in range(0, len(self.timing_examples), batch_size):
            batch = collate(self.timing_examples[start : start + batch_size], self.pad_id, pad_to)
            batch.pop("labels")
            out.append(batch)
        return out


def measure_row(bench: CheckpointBench, tilt_rate: float, batch_size: int) -> dict:
    """One report row: latency of tiltbench and each baseline, speedups, FLOPs, metric."""
    cfg = bench.cfg
    metrics, reference = bench.metric(tilt_rate), bench.metric(0.0)
    schedule = bench.schedule(tilt_rate)
    dynamic = bench.batches(batch_size, cfg.pad_to_max)
    kept: list[np.ndarray] = []

    def collect() -> None:
        if len(kept) < len(dynamic):  # realised counts of one full pass
            kept.append(realised_counts(bench.model).numpy().copy())

    # The headline pair is timed on its own: heavy baselines (eager attention allocates 400 MB tensors at
    # IMDB lengths) slow whatever runs near them, and the allocation-heavy eliminating path most. The other
    # baselines are timed with dense-dynamic as an anchor, and their speedups are chained through it.
    headline = [
        Variant("tiltbench", bench.model, dynamic, lambda: set_schedule(bench.model, schedule), collect),
        Variant("dense-dynamic", bench.dense, dynamic),
    ]
    anchored = [
        Variant("anchor", bench.dense, dynamic),
        Variant("dense-padded", bench.dense, bench.batches(batch_size, True)),
        Variant("dense-eager", bench.eager, dynamic),
    ]
    timing = dict(
        warmup=cfg.warmup,
        min_iterations=cfg.min_iterations,
        min_seconds=cfg.min_seconds,
        min_rounds=cfg.min_rounds,
        progress=bench.progress,
    )
    latency = time_interleaved(headline, **timing)
    latency.update(time_interleaved(anchored, **timing))
    anchor = latency.pop("anchor")
    totals = {name: robust_total(lat, len(dynamic)) for name, lat in latency.items()}
    chain = totals["dense-dynamic"] / robust_total(anchor, len(dynamic))  # anchor group -> headline group
    totals["dense-padded"] *= chain
    totals["dense-eager"] *= chain
    counts = np.concatenate(kept)  # [N, L+1]
    macs = [encoder_macs(row.tolist(), bench.dims) for row in counts]
    dense_macs = [encoder_macs([int(row[0])] * (bench.dims.layers + 1), bench.dims) for row in counts]
    n_examples, real_tokens = len(counts), int(counts[:, 0].sum())
    primary = bench.info.primary_metric
    row = {
        "checkpoint": bench.checkpoint,
        "method": bench.meta.get("method", "tilted"),
        "scorer": bench.meta["scorer"],
        "task": bench.info.name,
        "tilt_rate": tilt_rate,
        "batch_size": batch_size,
        "pad_to_max": cfg.pad_to_max,
        "threads": torch.get_num_threads(),
        "n_examples": n_examples,
        "n_batches": len(dynamic),
        "real_tokens": real_tokens,
        "max_seq_len": bench.data.max_seq_len,
        "metric_name": primary,
        "metric": metrics[primary],
        "metric_drop_points": round(100 * (reference[primary] - metrics[primary]), 4),
        "metrics": metrics,
        "metric_examples": len(bench.examples),
        **{f"speedup_vs_{b.replace('-', '_')}": totals[b] / totals["tiltbench"] for b in BASELINES},
        "speedup_estimator": "sum over batches of the median over rounds, baseline / tiltbench; dense-padded and "
        "dense-eager timed against a dense-dynamic anchor and chained through it",
        "anchor_latency": anchor.to_dict(),
        "predicted_speedup": sum(dense_macs) / sum(macs),
        "macs_per_example": sum(macs) / n_examples,
        "flops_per_example": 2 * sum(macs) / n_examples,
        "dense_macs_per_example": sum(dense_macs) / n_examples,
        "flop_unit": "encoder MACs; FLOPs = 2 x MACs",
        "mean_kept_tokens": [round(float(x), 3) for x in counts.mean(0)],
        # what a latency model needs to re-predict this row: the schedule, the model's sizes, the inputs' lengths
        "shape": schedule.shape,
        "min_tokens": schedule.min_tokens,
        "hidden": bench.dims.hidden,
        "ffn": bench.dims.ffn,
        "layers": bench.dims.layers,
        "heads": bench.model.config.num_attention_heads,
        "lengths": [int(n) for n in counts[:, 0]],
        "latency": {name: lat.to_dict() for name, lat in latency.items()},
        "throughput": {
            name: {
                "examples_per_s": n_examples * lat.count / len(dynamic) / (lat.total / 1000),
                "real_tokens_per_s": real_tokens * lat.count / len(dynamic) / (lat.total / 1000),
            }
            for name, lat in latency.items()
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if cfg.fvcore:
        row["fvcore"] = bench.fvcore(tilt_rate)
    return row


def row_key(row: dict) -> tuple:
    """What makes a row unique within a run (for resuming)."""
    return (
        str(Path(row["checkpoint"])),
        round(float(row["tilt_rate"]), 6),
        int(row["batch_size"]),
        bool(row["pad_to_max"]),
    )
