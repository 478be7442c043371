"""offline_tune(cfg): move a fine-tuned checkpoint along its method's knob without retraining.

TiltedBERT's offline-tuning, for any method: evaluates the checkpoint over a grid of knob values (the Tilt-Rate
for tilted, the retention scale for power), predicts each one's speedup with the analytic model on the
evaluation set's real lengths, chooses a value and (with `record`) records it in the checkpoint's tiltbench.json.
Choice: the largest value whose metric is within `max_drop` points (1 point = 0.01 of a fraction metric) of
the dense value's metric; or, with `target_speedup`, the smallest value predicted to reach it.

References: arXiv 2201.03327 v6/v9 abstracts (offline-tuning); methods.md §2.4 (protocol).
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path

from tiltbench.data import DataConfig, encode, load_split
from tiltbench.environment import environment
from tiltbench.errors import UserError
from tiltbench.files import check_output_dir, run_command, write_json_atomic, write_text_atomic
from tiltbench.inference import Progress, evaluate
from tiltbench.models import load_checkpoint, read_meta, write_meta
from tiltbench.patch import method_of, set_knob
from tiltbench.schedule import parse_grid
from tiltbench.speed_model import ModelDims, predict_speedup, speedup_from_counts
from tiltbench.transforms import FP32, apply_spec, check_transform


@dataclass(frozen=True)
class OfflineConfig:
    checkpoint: str
    _: KW_ONLY  # the rest by name: a dozen positional settings are unreadable and easy to shift
    knobs: tuple[float, ...] | None = None  # values of the method's knob; None: the method's default grid
    max_drop: float = 1.0
    target_speedup: float | None = None
    data: DataConfig | None = None  # None: the checkpoint's task and max length, default data dir
    batch_size: int = 64
    record: bool = False  # write the choice into the checkpoint's tiltbench.json (only when asked)
    output: str | None = None  # also write config/environment/report files into this folder
    overwrite: bool = False  # replace an earlier offline-tune run in `output`
    device: str = "cpu"  # where the model evaluates (cpu or cuda)
    transform: str = "fp32"  # numerics after loading: fp32, int8 or bf16 (tiltbench/transforms/)

    def __post_init__(self) -> None:
        if self.knobs is not None and not self.knobs:
            raise UserError("the knob grid is empty")
        if self.max_drop < 0:
            raise UserError(f"--max-drop must be >= 0 points, got {self.max_drop}")
        if self.target_speedup is not None and self.target_speedup <= 0:
            raise UserError(f"--target-speedup must be positive, got {self.target_speedup}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        check_transform(self.transform, self.device)


@dataclass
class OfflineRow:
    knob: float  # the method's knob (tilt rate for tilted, retention scale for power)
    metric: float  # the task's primary metric (a fraction)
    drop: float  # points below the dense knob's metric (100 x fraction)
    predicted_speedup: float  # analytic encoder-MAC ratio vs dense at each example's real length
    metrics: dict[str, float]
    mean_kept_tokens: list[float]  # realised mean [n0..nL] over the evaluation set


@dataclass
class OfflineReport:
    checkpoint: str
    task: str
    method: str
    knob_name: str
    metric_name: str
    n_examples: int
    rows: list[OfflineRow]
    chosen_knob: float
    criterion: str
    environment: dict = field(default_factory=dict)
    transform: str = "fp32"  # the numerics every row was evaluated under
    fp32_dense_metric: float | None = None  # a transformed run: the fp32 checkpoint at its dense knob

    def to_dict(self) -> dict:
        return asdict(self)


def offline_tune(cfg: OfflineConfig, progress: Progress | None = None) -> OfflineReport:
    """Evaluate cfg.checkpoint over cfg.knobs without training and choose a knob value."""
    meta = read_meta(cfg.checkpoint)
    data = cfg.data or DataConfig.for_checkpoint(meta)
    if cfg.output:
        _check_output(cfg)
    model, tokenizer, meta, info = load_checkpoint(cfg.checkpoint)
    model.to(cfg.device)
    method_of(model).to(cfg.device)
    eval_set, info = load_split(data, "eval", info)
    examples = encode(eval_set, tokenizer, data.max_seq_len)
    dims = ModelDims.from_config(model.config)
    method = method_of(model)
    for knob in cfg.knobs or ():
        method.schedule(knob)  # an out-of-range value fails before any work
    fp32_dense = None
    if cfg.transform != FP32:  # the total drop of a transformed row is against this, before the transform
        set_knob(model, method.dense_knob)
        fp32_metrics, _ = evaluate(model, examples, info, tokenizer.pad_token_id or 0, cfg.batch_size)
        fp32_dense = fp32_metrics[info.primary_metric]
        model, _ = apply_spec(model, cfg.transform)
    label = method.knob_name.replace("_", " ")
    knobs = sorted({method.dense_knob, *(cfg.knobs or parse_grid(method.default_grid))})
    schedules = {knob: method.schedule(knob) for knob in knobs}  # an out-of-range value fails before any work
    lengths = [len(e["input_ids"]) for e in examples]
    # A planned method is predicted before any work; an adaptive one (gates, ltp) from the counts it realises.
    predicted = (
        {}
        if method.adaptive
        else {knob: predict_speedup(dims, s, lengths).predicted_speedup for knob, s in schedules.items()}
    )
    if predicted and cfg.target_speedup is not None and max(predicted.values()) < cfg.target_speedup:
        raise UserError(
            f"no {label} in the grid reaches a predicted {cfg.target_speedup:g}x "
            f"(the most is {max(predicted.values()):.2f}x); widen the grid"
        )

    rows: list[OfflineRow] = []
    for i, knob in enumerate(knobs):
        set_knob(model, knob)
        metrics, outputs = evaluate(model, examples, info, tokenizer.pad_token_id or 0, cfg.batch_size)
        metric = metrics[info.primary_metric]
        reference = rows[0].metric if rows else metric
        if method.adaptive:
            predicted[knob] = speedup_from_counts(dims, outputs.kept.tolist())
        rows.append(
            OfflineRow(
                knob=knob,
                metric=metric,
                drop=round(100 * (reference - metric), 4),
                predicted_speedup=predicted[knob],
                metrics=metrics,
                mean_kept_tokens=[round(float(x), 3) for x in outputs.kept.mean(0)],
            )
        )
        if progress:
            progress(f"{label} {knob:g}", i + 1, len(knobs))

    chosen, criterion = _choose(rows, cfg, label)
    report = OfflineReport(
        checkpoint=str(cfg.checkpoint),
        task=info.name,
        method=method.name,
        knob_name=method.knob_name,
        metric_name=info.primary_metric,
        n_examples=len(examples),
        rows=rows,
        chosen_knob=chosen,
        criterion=criterion,
        environment=environment(model.config._attn_implementation, data.seed),
        transform=cfg.transform,
        fp32_dense_metric=fp32_dense,
    )
    if cfg.record:
        meta["schedule"] = schedules[chosen].to_dict()
        meta["knob"] = chosen
        meta["offline_tune"] = report.to_dict()
        write_meta(cfg.checkpoint, meta)
    if cfg.output:
        _write_run(Path(cfg.output), cfg, report)
    return report


def _check_output(cfg: OfflineConfig) -> None:
    """Before any work: --output is not the checkpoint, and holds nothing but an earlier offline-tune run."""
    output, checkpoint = Path(cfg.output).resolve(), Path(cfg.checkpoint).resolve()
    if output == checkpoint or checkpoint in output.parents:
        raise UserError(f"--output {cfg.output!r} is inside the checkpoint {cfg.checkpoint!r}; choose another folder")
    is_run = lambda f: run_command(f) == "offline-tune"  # noqa: E731
    check_output_dir(output, "an offline-tune run", is_run, cfg.overwrite, beside_checkpoints=True)


def offline_table(report: OfflineReport) -> tuple[list[str], list[list]]:
    """(headers, rows) of the offline-tune table, for the terminal and report.md."""
    headers = [report.knob_name.replace("_", " "), report.metric_name, "drop (points)", "predicted speedup"]
    headers.append("mean tokens n0..nL")
    rows = [
        [
            f"{r.knob:g}",
            round(r.metric, 4),
            round(r.drop, 2),
            round(r.predicted_speedup, 3),
            " ".join(f"{k:.1f}" for k in r.mean_kept_tokens),
        ]
        for r in report.rows
    ]
    return headers, rows


def _write_run(folder: Path, cfg: OfflineConfig, report: OfflineReport) -> None:
    from tiltbench.results import markdown_table

    write_json_atomic(folder / "config.json", {"command": "offline-tune", **asdict(cfg)})
    write_json_atomic(folder / "environment.json", report.environment)
    write_json_atomic(folder / "report.json", report.to_dict())
    trained = Path(report.checkpoint) / "metrics.json"
    if trained.is_file():  # the checkpoint folder may not be kept (results/**/checkpoint is git-ignored)
        meta = read_meta(report.checkpoint)
        write_json_atomic(
            folder / "finetune.json",
            {
                "metrics": json.loads(trained.read_text()),
                "train_config": meta.get("train_config"),
                "environment": meta.get("environment"),
            },
        )
    headers, rows = offline_table(report)
    write_text_atomic(
        folder / "report.md",
        f"# offline-tune: {report.checkpoint} on {report.task}"
        + ("" if report.transform == FP32 else f" under {report.transform}")
        + "\n\n"
        + (
            ""
            if report.fp32_dense_metric is None
            else f"Every row evaluated under {report.transform}; the fp32 checkpoint at its dense knob: "
            f"{report.fp32_dense_metric:.4f}.\n\n"
        )
        + f"{report.n_examples} evaluation examples; predicted speedup = dense encoder MACs / "
        f"MACs with the counts kept (planned, or realised by an adaptive method), each example at its real "
        f"length (FLOPs = 2 x MACs).\n\n"
        + markdown_table(headers, rows)
        + f"\nChosen {report.knob_name.replace('_', ' ')}: **{report.chosen_knob:g}** ({report.criterion}).\n",
    )


def _choose(rows: list[OfflineRow], cfg: OfflineConfig, label: str) -> tuple[float, str]:
    dense = rows[0].knob
    if cfg.target_speedup is not None:
        reaching = [r.knob for r in rows if r.predicted_speedup >= cfg.target_speedup]
        if not reaching:  # an adaptive method's prediction is known only after the evaluation
            best = max(r.predicted_speedup for r in rows)
            raise UserError(
                f"no {label} in the grid reaches a predicted {cfg.target_speedup:g}x (the most is {best:.2f}x); "
                "widen the grid"
            )
        return min(reaching), f"smallest {label} predicted to reach {cfg.target_speedup:g}x"
    within = [r.knob for r in rows if r.drop <= cfg.max_drop + 1e-9]
    return max(within), f"largest {label} within {cfg.max_drop:g} points of {label} {dense:g}"
