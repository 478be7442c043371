"""Measure one checkpoint at one knob value and batch size against the dense baselines, in the same process.

The knob is the checkpoint's method's (tilt rate for tilted, retention scale for power); "tilt rate 0" below
stands for the method's dense knob value.

Variants, all on the same real dev-set inputs (dataset order), the same threads, interleaved batch by batch:
  tiltbench      the patched checkpoint at the row's knob value (dynamic padding, or --pad-to-max)
  keep-all       the same model on the eliminating path with nothing removed (attribution, below)
  dense-dynamic  the plain HF model, its default attention, padded to the batch maximum: the headline baseline
  dense-padded   the plain HF model on inputs padded to --max-seq-len, as papers measure
  dense-eager    the plain HF model with eager attention (dynamic padding)
  dense-int8     with --quantize int8 / --dtype bf16 ([stack]): the plain HF model under tiltbench's transform,
  dense-bf16     in the headline group; the fp32 baselines above stay fp32 (what users compare with)
Speedup against a baseline = its robust total / tiltbench's: per batch, the median over (at least 3) rounds,
summed over the batches; the same batches for every variant, so the total is content-weighted. tiltbench,
keep-all and the headline baseline are timed as one interleaved group; the other baselines are timed
interleaved with an anchor (a second copy of the headline baseline's runs) and their speedups chained through
it (a heavy baseline slows whatever runs near it). With --pad-to-max every variant gets padded inputs and the
headline baseline is dense-padded; dense-dynamic is then one of the anchored baselines.

Attribution: eliminating layers compute attention only over each row chunk's real tokens and the first
gather drops the batch's padding, while HF's dense layers compute the padding too. So, at tilt rates above 0
    speedup vs headline = (headline / keep-all) x (keep-all / tiltbench)
                        = speedup_from_padding x speedup_from_elimination,
the first the part from not computing the batch's padding (net of the eliminating path's own overhead:
explicit attention, scoring, gather), the second the part from the tokens actually removed (and from the
layers where nothing leaves, which tiltbench runs as HF's own layer). At tilt rate 0 tiltbench is HF's own
forward, which skips no padding and removes nothing: keep-all is not timed, and the split is 1 x the speedup.

References: optimum-benchmark (report layout, percentiles); methods.md §9.5 (why measured != FLOP ratio).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tiltbench.data import DataConfig, collate, encode, load_split
from tiltbench.distributed import on_device
from tiltbench.eliminate import _WORKSPACE
from tiltbench.errors import UserError
from tiltbench.flops import fvcore_macs
from tiltbench.inference import Progress, evaluate
from tiltbench.latency import Variant, robust_total, time_interleaved
from tiltbench.models import load_checkpoint, load_model, method_from_meta, read_meta
from tiltbench.patch import method_of, patch, realised_counts, set_schedule, unpatch
from tiltbench.rows import MeasureRow
from tiltbench.schedule import Schedule
from tiltbench.speed_model import ModelDims, encoder_macs
from tiltbench.transforms import FP32, apply_spec, check_transform
from tiltbench.transforms.base import memory_megabytes, model_megabytes, parameter_split


@dataclass(frozen=True, kw_only=True)
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
    device: str = "cpu"  # cpu or cuda (resolved from --device auto by the caller: a run records where it timed)
    transform: str = "fp32"  # tiltbench's numerics: fp32, int8 or bf16 (tiltbench/transforms/); a sweep's grid

    @property
    def headline_baseline(self) -> str:
        """The baseline timed in tiltbench's own group: dense-padded when every input is padded, else dense-dynamic."""
        return "dense-padded" if self.pad_to_max else "dense-dynamic"

    def __post_init__(self) -> None:
        for name in ("latency_examples", "min_iterations", "min_rounds", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.min_seconds < 0:
            raise UserError("--warmup and --min-seconds must be >= 0")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"the measuring device must be cpu or cuda, got {self.device!r}")
        check_transform(self.transform, self.device)

    @property
    def transform_baseline(self) -> str | None:
        """The dense model under tiltbench's transform (dense-int8, dense-bf16); None for fp32. It runs on the
        headline's inputs, so with --pad-to-max it is padded too, and its name says so (dense-int8-padded)."""
        if self.transform == FP32:
            return None
        return f"dense-{self.transform}" + ("-padded" if self.pad_to_max else "")


def measure_data(meta: dict, cfg: MeasureConfig) -> DataConfig:
    """The evaluation data of a checkpoint under `cfg` (its own task and length unless overridden)."""
    return DataConfig.for_checkpoint(
        meta,
        cfg.task,
        cfg.max_seq_len,
        data_dir=cfg.data_dir,
        eval_file=cfg.eval_file,
        text_column=cfg.text_column,
        text_pair_column=cfg.text_pair_column,
        label_column=cfg.label_column,
        max_eval_samples=cfg.max_eval_samples,
        seed=cfg.seed,
    )


@dataclass
class CheckpointBench:
    """Everything loaded once per checkpoint: the patched model, the two dense baselines, inputs, metric cache."""

    checkpoint: str
    cfg: MeasureConfig
    metrics: dict[float, dict[str, float]] = field(default_factory=dict)
    fvcore_rows: dict[float, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.data = measure_data(read_meta(self.checkpoint), cfg)
        self.model, self.tokenizer, self.meta, self.info = load_checkpoint(self.checkpoint)
        self.dense, _ = load_model(self.checkpoint)  # fp32, whatever the transform: the headline baseline
        self.eager, _ = load_model(self.checkpoint, attn_implementation="eager")
        self.dense_transformed = None  # dense-int8 / dense-bf16: the same HF model under tiltbench's transform
        if cfg.transform != FP32:
            self.dense_transformed, _ = apply_spec(load_model(self.checkpoint)[0], cfg.transform)
        for model in (self.model, self.dense, self.eager, self.dense_transformed):
            if model is not None:
                model.to(cfg.device)
        method_of(self.model).to(cfg.device)  # the method's own weights (gates, thresholds) beside the model's
        # after the move: a transform is applied on the device the model runs on (bf16 casts there too)
        self.model, _ = apply_spec(self.model, cfg.transform)
        self.model_mb, self.dense_fp32_mb = model_megabytes(self.model), model_megabytes(self.dense)
        self.memory_mb, self.parameters = memory_megabytes(self.model), parameter_split(self.dense)
        self.embeddings = (self.meta.get("embeddings") or {}).get("kind", "table")
        self._fp32_metric: dict[str, float] | None = None
        eval_set, self.info = load_split(self.data, "eval", self.info)
        self.examples = encode(eval_set, self.tokenizer, self.data.max_seq_len)
        self.timing_examples = self.examples[: cfg.latency_examples]
        self.dims = ModelDims.from_config(self.model.config)
        self.method = method_of(self.model)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # The model the checkpoint was fine-tuned from: part of a row's identity when runs are compared.
        self.base_model = (self.meta.get("train_config") or {}).get("model") or self.model.config.name_or_path

    def schedule(self, knob: float) -> Schedule:
        """The method's counts at this knob value (UserError when out of the method's range)."""
        return self.method.schedule(knob)

    def metric(self, knob: float, progress: Progress | None = None) -> dict[str, float]:
        """Task metrics at a knob value on the evaluation set (cached: they do not depend on the batch size)."""
        if knob not in self.metrics:
            set_schedule(self.model, self.schedule(knob))
            self.metrics[knob], _ = evaluate(
                self.model, self.examples, self.info, self.pad_id, self.cfg.eval_batch_size, progress
            )
        return self.metrics[knob]

    def fp32_metric(self, progress: Progress | None = None) -> dict[str, float]:
        """Task metrics of HF's dense fp32 model on the evaluation set: what a transformed row's total drop is
        measured against."""
        if self._fp32_metric is None:
            self._fp32_metric, _ = evaluate(
                self.dense, self.examples, self.info, self.pad_id, self.cfg.eval_batch_size, progress
            )
        return self._fp32_metric

    def fvcore(self, knob: float) -> dict:
        """fvcore vs analytic MACs on the first timing example alone (eager attention, so fvcore sees the matmuls)."""
        if knob not in self.fvcore_rows:
            example = on_device(collate(self.timing_examples[:1], self.pad_id), torch.device(self.cfg.device))
            schedule = self.schedule(knob)
            patch(self.eager, schedule, method=method_from_meta(self.meta, self.dims.layers, self.checkpoint))
            try:
                total, by_op = fvcore_macs(self.eager, example["input_ids"], example["attention_mask"])
                counts = realised_counts(self.eager)[0].tolist()  # an adaptive method's own; a plan's otherwise
            finally:
                unpatch(self.eager)
            analytic = encoder_macs(counts, self.dims)
            self.fvcore_rows[knob] = {
                "tokens": int(example["attention_mask"].sum()),
                "fvcore_macs": total,
                "analytic_encoder_macs": analytic,
                "relative_difference": round(total / analytic - 1, 5),
                "fvcore_by_operator": by_op,
                "unit": "MAC",
            }
        return self.fvcore_rows[knob]

    def batches(self, batch_size: int, padded: bool) -> list[dict[str, torch.Tensor]]:
        pad_to = self.data.max_seq_len if padded else None
        out = []
        for start in range(0, len(self.timing_examples), batch_size):
            batch = collate(self.timing_examples[start : start + batch_size], self.pad_id, pad_to)
            batch.pop("labels")
            out.append(on_device(batch, torch.device(self.cfg.device)))
        return out


class EmbeddingLayer(nn.Module):
    """A model's input embedding layer (words, positions, token types, LayerNorm) called as the model is, on the
    same batches: `measure` times it beside the model for its share of the forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embeddings = model.base_model.embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


def measure_row(bench: CheckpointBench, knob: float, batch_size: int, progress: Progress | None = None) -> MeasureRow:
    """One report row: latency of tiltbench, keep-all and each baseline, speedups and their attribution, FLOPs,
    metric. `progress(description, done, total)` sees the evaluation and then the timing."""
    cfg = bench.cfg
    evaluating = _part(progress, "evaluating", 0.0, 0.2)
    metrics, reference = bench.metric(knob, evaluating), bench.metric(bench.method.dense_knob, evaluating)
    schedule = bench.schedule(knob)
    keep_all = Schedule(bench.dims.layers)  # every token kept, on the eliminating path
    dynamic, padded = bench.batches(batch_size, False), bench.batches(batch_size, True)
    inputs = padded if cfg.pad_to_max else dynamic
    headline_name = cfg.headline_baseline
    kept: list[np.ndarray] = []

    def collect() -> None:
        if len(kept) < len(inputs):  # realised counts of one full pass
            kept.append(realised_counts(bench.model).cpu().numpy().copy())

    # The headline group is timed on its own: heavy baselines (eager attention allocates 400 MB tensors at
    # IMDB lengths) slow whatever runs near them, and the allocation-heavy eliminating path most. The other
    # baselines are timed with the headline baseline as an anchor, and their speedups are chained through it.
    headline = [
        Variant("tiltbench", bench.model, inputs, lambda: set_schedule(bench.model, schedule), collect),
        Variant(headline_name, bench.dense, inputs),
    ]
    if not schedule.is_identity:  # at tilt rate 0 tiltbench is HF's own forward: nothing to attribute
        headline.append(
            Variant("keep-all", bench.model, inputs, lambda: set_schedule(bench.model, keep_all, keep_all=True))
        )
    same_transform = cfg.transform_baseline
    if same_transform:  # dense-int8 / dense-bf16 in tiltbench's own group: the speedup a user of int8 gains
        headline.append(Variant(same_transform, bench.dense_transformed, inputs))
    # the embedding layer of tiltbench's model alone, on the same inputs: its share of the forward ([eel])
    headline.append(Variant("embeddings", EmbeddingLayer(bench.model), inputs, paces=False))
    others = {"dense-dynamic": (bench.dense, dynamic), "dense-padded": (bench.dense, padded)}
    others["dense-eager"] = (bench.eager, inputs)
    anchored = [Variant("anchor", bench.dense, inputs)]
    anchored += [Variant(name, model, data) for name, (model, data) in others.items() if name != headline_name]
    timing = dict(
        warmup=cfg.warmup,
        min_iterations=cfg.min_iterations,
        min_seconds=cfg.min_seconds,
        min_rounds=cfg.min_rounds,
    )
    peak_gpu = _peak_gpu_mib(headline, bench) if cfg.device == "cuda" else None
    latency = time_interleaved(headline, **timing, progress=_part(progress, "timing", 0.2, 0.7))
    latency.update(time_interleaved(anchored, **timing, progress=_part(progress, "timing baselines", 0.7, 1.0)))
    anchor = latency.pop("anchor")
    embedding_ms = robust_total(latency.pop("embeddings"), len(inputs))
    totals = {name: robust_total(lat, len(inputs)) for name, lat in latency.items()}
    chain = totals[headline_name] / robust_total(anchor, len(inputs))  # anchor group -> headline group
    for name in others:
        if name != headline_name:
            totals[name] *= chain
    # the part of the speedup the transform itself brings (1 for fp32), then padding and elimination against
    # the same-transform dense model
    transformed_dense = totals[same_transform] if same_transform else totals[headline_name]
    fp32_drop = None
    if same_transform:
        fp32 = bench.fp32_metric()
        fp32_drop = round(100 * (fp32[bench.info.primary_metric] - metrics[bench.info.primary_metric]), 4)
    counts = np.concatenate(kept)  # [N, L+1]
    macs = [encoder_macs(row.tolist(), bench.dims) for row in counts]
    dense_macs = [encoder_macs([int(row[0])] * (bench.dims.layers + 1), bench.dims) for row in counts]
    n_examples, real_tokens = len(counts), int(counts[:, 0].sum())
    primary = bench.info.primary_metric
    return MeasureRow(
        checkpoint=bench.checkpoint,
        model=bench.base_model,
        method=bench.method.name,
        scorer=bench.method.scorer_name,
        task=bench.info.name,
        knob_name=bench.method.knob_name,
        knob=knob,
        batch_size=batch_size,
        pad_to_max=cfg.pad_to_max,
        headline_baseline=headline_name,
        threads=torch.get_num_threads(),
        n_examples=n_examples,
        latency_examples=cfg.latency_examples,
        n_batches=len(inputs),
        real_tokens=real_tokens,
        max_seq_len=bench.data.max_seq_len,
        metric_name=primary,
        metric=metrics[primary],
        metric_drop_points=round(100 * (reference[primary] - metrics[primary]), 4),
        metrics=metrics,
        metric_examples=len(bench.examples),
        speedup_vs_dense_dynamic=totals["dense-dynamic"] / totals["tiltbench"],
        speedup_vs_dense_padded=totals["dense-padded"] / totals["tiltbench"],
        speedup_vs_dense_eager=totals["dense-eager"] / totals["tiltbench"],
        # at tilt rate 0 (HF's forward: no padding skipped, no token removed) the split is 1 x the speedup
        speedup_from_padding=transformed_dense / totals.get("keep-all", transformed_dense),
        speedup_from_elimination=totals.get("keep-all", transformed_dense) / totals["tiltbench"],
        speedup_estimator="sum over batches of the median over rounds, baseline / tiltbench; baselines outside "
        "the headline group timed against an anchor and chained through it; speedup vs the headline baseline = "
        "speedup_from_transform (headline / same-transform dense, 1 for fp32) x speedup_from_padding "
        "(same-transform dense / keep-all) x speedup_from_elimination (keep-all / tiltbench)",
        anchor_latency=anchor.to_dict(),
        predicted_speedup=sum(dense_macs) / sum(macs),
        macs_per_example=sum(macs) / n_examples,
        flops_per_example=2 * sum(macs) / n_examples,
        dense_macs_per_example=sum(dense_macs) / n_examples,
        flop_unit="encoder MACs from the realised kept counts; FLOPs = 2 x MACs",
        mean_kept_tokens=[round(float(x), 3) for x in counts.mean(0)],
        kept_tokens_spread={
            "std": [round(float(x), 3) for x in counts.std(0)],
            "min": [int(x) for x in counts.min(0)],
            "max": [int(x) for x in counts.max(0)],
        },
        # what a latency model needs to re-predict this row: the schedule, the model's sizes, the inputs' lengths
        schedule=schedule.to_dict(),
        shape=schedule.shape,
        min_tokens=schedule.min_tokens,
        hidden=bench.dims.hidden,
        ffn=bench.dims.ffn,
        layers=bench.dims.layers,
        heads=bench.model.config.num_attention_heads,
        lengths=[int(n) for n in counts[:, 0]],
        latency={name: lat.to_dict() for name, lat in latency.items()},
        throughput={
            name: {
                "examples_per_s": n_examples * lat.count / len(inputs) / (lat.total / 1000),
                "real_tokens_per_s": real_tokens * lat.count / len(inputs) / (lat.total / 1000),
            }
            for name, lat in latency.items()
        },
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        device=cfg.device,
        peak_gpu_mib=peak_gpu,
        explicit_attention=not bench.method.decides_before_attention,
        always_eliminating=(
            [bench.method.prunes(i) for i in range(bench.dims.layers)]
            if bench.method.adaptive and not bench.method.decides_before_attention and not schedule.is_identity
            else None
        ),
        kept_counts=counts.tolist(),  # [N][L+1] realised per example: the models re-predict from these
        fvcore=_fvcore_note(bench.fvcore(knob), cfg.transform) if cfg.fvcore else None,
        transform=cfg.transform,
        transform_baseline=same_transform,
        speedup_vs_dense_transform=totals[same_transform] / totals["tiltbench"] if same_transform else None,
        speedup_from_transform=totals[headline_name] / transformed_dense,
        metric_drop_vs_fp32_points=fp32_drop,
        model_mb=bench.model_mb,
        dense_fp32_mb=bench.dense_fp32_mb,
        embeddings=bench.embeddings,
        memory_mb=bench.memory_mb,
        parameters=bench.parameters,
        embedding_share=round(embedding_ms / robust_total(latency["tiltbench"], len(inputs)), 4),
    )


def _fvcore_note(row: dict, transform: str) -> dict:
    """fvcore traces the fp32 eager model: quantised Linear ops are opaque to it (it counts none of their MACs),
    and a bf16 model does the same MACs. The analytic count stands for every transform."""
    if transform == FP32:
        return row
    return {
        **row,
        "note": f"counted on the fp32 model: fvcore cannot count {transform} Linear ops; the "
        "analytic MAC count is the same for every transform",
    }


def _peak_gpu_mib(variants: list[Variant], bench: CheckpointBench) -> dict[str, float]:
    """Peak CUDA memory (MiB) of one forward of each variant on its largest batch, each measured alone: what it
    holds beyond the weights, which all variants share, plus the weights."""
    out = {}
    with torch.inference_mode():
        for variant in variants:
            batch = max(variant.batches, key=lambda b: b["input_ids"].numel())
            if variant.before:
                variant.before()
            _WORKSPACE.clear()  # the eliminating path's reusable buffer would count against the next variant
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            variant.model(**batch)
            torch.cuda.synchronize()
            out[variant.name] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _part(progress: Progress | None, label: str, start: float, stop: float) -> Progress | None:
    """A progress callback for one stage of a row, mapped onto [start, stop] of the row's 0..1."""
    if progress is None:
        return None
    return lambda _, done, total: progress(label, start + (stop - start) * done / max(total, 1), 1)
