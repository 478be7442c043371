"""tiltbench command line: thin typer commands over the library API. The only module that imports typer.

A `UserError` becomes one line on stderr and exit status 2 (as click's usage errors); anything else is a bug
and keeps its traceback. TILTBENCH_DEBUG=1 shows tracebacks for user errors too.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

try:  # typer >= 0.29 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError
from typer import Abort

from tiltbench.console import err_console, markdown_table, out_console, progress_bar, table
from tiltbench.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Word-vector elimination (TiltedBERT and friends) for BERT-family encoders, measured honestly.",
)

# Shared options, defined once. torch/transformers are imported inside commands so --help is instant.
ModelOpt = Annotated[str, typer.Option(help="'minilm' (packaged all-MiniLM-L6-v2), a local HF folder or a Hub id.")]
TaskOpt = Annotated[str, typer.Option(help="sst2, cola, mrpc, rte, stsb, qnli, wnli or imdb.")]
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        help="Folder laid out like ../shared/data [env: TILTBENCH_DATA_DIR]; neither set: the Hugging Face Hub."
    ),
]
TrainFileOpt = Annotated[str | None, typer.Option(help="Your own training data (.csv, .tsv or .jsonl).")]
EvalFileOpt = Annotated[str | None, typer.Option(help="Your own evaluation data (.csv, .tsv or .jsonl).")]
TextColOpt = Annotated[str, typer.Option(help="Text column of --train-file/--eval-file.")]
PairColOpt = Annotated[str | None, typer.Option(help="Second-text column for pair tasks.")]
LabelColOpt = Annotated[str, typer.Option(help="Label column of --train-file/--eval-file.")]
MaxTrainOpt = Annotated[int | None, typer.Option(help="Use this many training examples (seeded shuffle).")]
MaxEvalOpt = Annotated[int | None, typer.Option(help="Use this many evaluation examples (seeded shuffle).")]
MaxLenOpt = Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for shuffling, initialisation and dropout.")]
TiltRateOpt = Annotated[float, typer.Option(help="Tilt-Rate in [0, 1): layer l keeps ceil(n0*(1-rate)^l) tokens.")]
ShapeOpt = Annotated[str, typer.Option(help="Schedule shape: geometric (default) or linear.")]
MinTokensOpt = Annotated[int, typer.Option(help="Never keep fewer tokens than this ([CLS] included).")]
ScorerOpt = Annotated[str, typer.Option(help="Importance score: acc, acc-nodiag or acc-norm.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch threads (default: torch's, all cores).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only (no table, no progress).")]
CheckpointArg = Annotated[str, typer.Argument(help="A folder written by `tiltbench finetune`.")]


def handle_errors(command):
    """UserError -> 'error: ...' on stderr, exit 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            if os.environ.get("TILTBENCH_DEBUG"):
                raise
            err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _setup(threads: int | None = None) -> None:
    """Quiet the libraries' own logging and bars; set torch threads."""
    import datasets
    import huggingface_hub
    import torch
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()  # no retry chatter when the Hub is unreachable
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
@handle_errors
def finetune(
    output: Annotated[str, typer.Option(help="Checkpoint folder to write.")],
    model: ModelOpt = "minilm",
    task: TaskOpt = "sst2",
    data_dir: DataDirOpt = None,
    train_file: TrainFileOpt = None,
    eval_file: EvalFileOpt = None,
    text_column: TextColOpt = "text",
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    max_train_samples: MaxTrainOpt = None,
    max_eval_samples: MaxEvalOpt = None,
    max_seq_len: MaxLenOpt = 128,
    tilt_rate: TiltRateOpt = 0.0,
    shape: ShapeOpt = "geometric",
    min_tokens: MinTokensOpt = 1,
    scorer: ScorerOpt = "acc",
    epochs: int = 1,
    batch_size: int = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune with word-vector elimination on at --tilt-rate; write an HF checkpoint + tiltbench.json."""
    _setup(threads)
    from tiltbench.data import DataConfig
    from tiltbench.finetune import TrainConfig
    from tiltbench.finetune import finetune as run_finetune

    data = DataConfig(
        task,
        data_dir,
        train_file,
        eval_file,
        text_column,
        text_pair_column,
        label_column,
        max_train_samples,
        max_eval_samples,
        max_seq_len,
        seed,
    )
    cfg = TrainConfig(
        output,
        data,
        model,
        tilt_rate,
        shape,
        min_tokens,
        scorer,
        epochs,
        batch_size,
        lr,  # type: ignore[arg-type]
        warmup_ratio,
        weight_decay,
    )
    with progress_bar(not json_out) as progress:
        result = run_finetune(cfg, progress)
    summary = {**result.metrics, "train_seconds": round(result.train_seconds, 2), "output": str(result.output)}
    if json_out:
        return _emit_json(summary)
    out_console.print(
        table(
            f"finetune -> {result.output}",
            ["epoch", *[k for k in result.metrics if k != "epoch"]],
            [[h["epoch"], *[h[k] for k in result.metrics if k != "epoch"]] for h in result.history],
        )
    )


@app.command("offline-tune")
@handle_errors
def offline_tune(
    checkpoint: CheckpointArg,
    tilt_rates: Annotated[
        str, typer.Option(help="Grid start:stop:step (stop included) or a comma list.")
    ] = "0:0.5:0.05",
    max_drop: Annotated[float, typer.Option(help="Allowed metric drop vs tilt rate 0, in points.")] = 1.0,
    target_speedup: Annotated[
        float | None, typer.Option(help="Choose the smallest rate predicted to reach this.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Default: the checkpoint's task.")] = None,
    data_dir: DataDirOpt = None,
    eval_file: EvalFileOpt = None,
    text_column: TextColOpt = "text",
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    max_eval_samples: MaxEvalOpt = None,
    max_seq_len: Annotated[int | None, typer.Option(help="Default: the checkpoint's.")] = None,
    batch_size: int = 64,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    output: Annotated[str | None, typer.Option(help="Also write config/environment/report files here.")] = None,
    record: Annotated[bool, typer.Option(help="Record the chosen rate in the checkpoint's tiltbench.json.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint over a grid of tilt rates without training and choose one."""
    _setup(threads)
    from tiltbench.data import DataConfig
    from tiltbench.models import read_meta
    from tiltbench.offline import OfflineConfig
    from tiltbench.offline import offline_tune as run_offline
    from tiltbench.report import check_output_dir
    from tiltbench.schedule import parse_grid

    meta = read_meta(checkpoint)
    data = DataConfig(
        task or meta["task"]["name"],
        data_dir,
        None,
        eval_file,
        text_column,
        text_pair_column,
        label_column,
        None,
        max_eval_samples,
        max_seq_len or meta["max_seq_len"],
        seed,
    )
    cfg = OfflineConfig(checkpoint, tuple(parse_grid(tilt_rates)), max_drop, target_speedup, data, batch_size, record)
    if output:
        check_output_dir(output)
    with progress_bar(not json_out) as progress:
        report = run_offline(cfg, progress)
    headers, rows = _offline_table(report)
    if output:
        _write_offline_run(Path(output), cfg, report, headers, rows)
    if json_out:
        return _emit_json(
            {
                "rows": [
                    {"tilt_rate": r.tilt_rate, "metric": r.metric, "predicted_speedup": r.predicted_speedup}
                    for r in report.rows
                ],
                "chosen_tilt_rate": report.chosen_tilt_rate,
            }
        )
    title = f"offline-tune {report.checkpoint} on {report.task} ({report.n_examples} examples)"
    caption = "predicted speedup = dense encoder MACs / MACs with the schedule, each example at its real length"
    out_console.print(table(title, headers, rows, caption))
    out_console.print(f"chosen tilt rate: [bold]{report.chosen_tilt_rate:g}[/] ({report.criterion})")


def _offline_table(report) -> tuple[list[str], list[list]]:
    headers = [
        "tilt rate",
        report.metric_name,
        "drop (points)",
        "predicted speedup",
        "mean tokens n0..nL",
    ]
    rows = [
        [
            f"{r.tilt_rate:g}",
            round(r.metric, 4),
            round(r.drop, 2),
            round(r.predicted_speedup, 3),
            " ".join(f"{k:.1f}" for k in r.mean_kept_tokens),
        ]
        for r in report.rows
    ]
    return headers, rows


def _write_offline_run(folder: Path, cfg, report, headers, rows) -> None:
    from dataclasses import asdict

    from tiltbench.models import read_meta
    from tiltbench.report import write_json_atomic, write_text_atomic

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
    write_text_atomic(
        folder / "report.md",
        f"# offline-tune: {report.checkpoint} on {report.task}\n\n"
        f"{report.n_examples} evaluation examples; predicted speedup = dense encoder MACs / "
        f"MACs with the schedule, each example at its real length (FLOPs = 2 x MACs).\n\n"
        + markdown_table(headers, rows)
        + f"\nChosen tilt rate: **{report.chosen_tilt_rate:g}** ({report.criterion}).\n",
    )


@app.command()
@handle_errors
def predict(
    checkpoint: CheckpointArg,
    text: Annotated[list[str] | None, typer.Option(help="Input text (repeatable).")] = None,
    input_file: Annotated[
        str | None, typer.Option("--input", help="JSONL with 'text' and optional 'text_pair'.")
    ] = None,
    tilt_rate: Annotated[float | None, typer.Option(help="Default: the checkpoint's.")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Classify texts at a tilt rate; print label, logits and the realised kept tokens per layer."""
    _setup(threads)
    from tiltbench.inference import predict_texts
    from tiltbench.models import load_checkpoint
    from tiltbench.patch import set_schedule

    texts, pairs = _inputs(text, input_file)
    model, tokenizer, meta, info = load_checkpoint(checkpoint)
    if tilt_rate is not None:
        set_schedule(
            model,
            tilt_rate,
            shape=meta["schedule"]["shape"] if meta["schedule"]["shape"] != "list" else "geometric",
            min_tokens=meta["schedule"]["min_tokens"],
        )
    results = predict_texts(model, tokenizer, info, texts, pairs, meta["max_seq_len"])
    if json_out:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in results))
        return
    rows = [
        [r["text"][:60], r["label"], " ".join(f"{x:.3f}" for x in r["logits"]), " ".join(map(str, r["kept_tokens"]))]
        for r in results
    ]
    out_console.print(
        table(
            f"predict at {model._tiltbench.schedule.describe()}",
            ["text", "label", "logits", "kept tokens n0..nL"],
            rows,
        )
    )


def _inputs(text: list[str] | None, input_file: str | None) -> tuple[list[str], list[str | None] | None]:
    texts: list[str] = list(text or [])
    pairs: list[str | None] = [None] * len(texts)
    if input_file:
        path = Path(input_file)
        if not path.is_file():
            raise UserError(f"input file {input_file!r} does not exist")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                texts.append(str(record["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{input_file}:{n}: each line must be a JSON object with a 'text' field") from None
            pairs.append(record.get("text_pair"))
    if not texts:
        raise UserError("nothing to predict: pass --text or --input")
    return texts, pairs if any(p is not None for p in pairs) else None


# measure / sweep options (shared)
TiltRatesOpt = Annotated[str, typer.Option(help="Grid start:stop:step (stop included) or a comma list.")]
BatchSizesOpt = Annotated[str, typer.Option(help="Comma list of batch sizes.")]
RunNameOpt = Annotated[str | None, typer.Option(help="Folder under --results-dir (default: from the command).")]
ResultsDirOpt = Annotated[str, typer.Option(help="Where run folders go.")]
LatencyExamplesOpt = Annotated[int, typer.Option(help="Time the first N evaluation examples (dataset order).")]
WarmupOpt = Annotated[int, typer.Option(help="Untimed batches per variant before timing.")]
MinItersOpt = Annotated[int, typer.Option(help="Timed batches per variant, at least.")]
MinSecondsOpt = Annotated[float, typer.Option(help="Timed seconds per variant, at least.")]
PadToMaxOpt = Annotated[bool, typer.Option(help="Pad tiltbench's inputs to --max-seq-len too (not dynamic).")]
FvcoreOpt = Annotated[bool, typer.Option(help="Cross-check FLOPs with fvcore (one traced example per rate).")]
ForceOpt = Annotated[bool, typer.Option(help="Redo rows already in the run folder.")]
OptTaskOpt = Annotated[str | None, typer.Option(help="Default: each checkpoint's task.")]
OptMaxLenOpt = Annotated[int | None, typer.Option(help="Default: each checkpoint's.")]


@app.command()
@handle_errors
def measure(
    checkpoint: CheckpointArg,
    tilt_rates: TiltRatesOpt = "0:0.5:0.1",
    batch_sizes: BatchSizesOpt = "1,8,32",
    run_name: RunNameOpt = None,
    results_dir: ResultsDirOpt = "results",
    task: OptTaskOpt = None,
    data_dir: DataDirOpt = None,
    eval_file: EvalFileOpt = None,
    text_column: TextColOpt = "text",
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    max_eval_samples: MaxEvalOpt = None,
    max_seq_len: OptMaxLenOpt = None,
    latency_examples: LatencyExamplesOpt = 256,
    warmup: WarmupOpt = 2,
    min_iterations: MinItersOpt = 10,
    min_seconds: MinSecondsOpt = 2.0,
    pad_to_max: PadToMaxOpt = False,
    fvcore: FvcoreOpt = True,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Latency, FLOPs and the task metric of one checkpoint over tilt rates and batch sizes, against dense
    baselines run interleaved in the same process; writes results/<run-name>/."""
    settings = dict(locals())
    settings["checkpoints"] = [settings.pop("checkpoint")]
    settings["run_name"] = run_name or f"measure-{Path(checkpoint).resolve().name}"
    _run_sweep(**settings)


@app.command()
@handle_errors
def sweep(
    checkpoint: Annotated[list[str], typer.Option(help="A tiltbench checkpoint (repeatable, to compare methods).")],
    tilt_rates: TiltRatesOpt = "0:0.6:0.05",
    batch_sizes: BatchSizesOpt = "1,8,32",
    run_name: RunNameOpt = None,
    results_dir: ResultsDirOpt = "results",
    task: OptTaskOpt = None,
    data_dir: DataDirOpt = None,
    eval_file: EvalFileOpt = None,
    text_column: TextColOpt = "text",
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    max_eval_samples: MaxEvalOpt = None,
    max_seq_len: OptMaxLenOpt = None,
    latency_examples: LatencyExamplesOpt = 256,
    warmup: WarmupOpt = 2,
    min_iterations: MinItersOpt = 10,
    min_seconds: MinSecondsOpt = 2.0,
    pad_to_max: PadToMaxOpt = False,
    fvcore: FvcoreOpt = True,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Checkpoints x tilt rates x batch sizes, one measured row each; resumable (reruns skip finished rows)."""
    settings = dict(locals())
    settings["checkpoints"] = settings.pop("checkpoint")
    settings["run_name"] = run_name or "sweep"
    _run_sweep(**settings)


def _run_sweep(
    checkpoints: list[str],
    tilt_rates: str,
    batch_sizes: str,
    run_name: str,
    results_dir: str,
    force: bool,
    threads: int | None,
    json_out: bool,
    **measure_settings,
) -> None:
    _setup(threads)
    from tiltbench.measure import MeasureConfig
    from tiltbench.results import table_rows
    from tiltbench.schedule import parse_grid
    from tiltbench.sweep import SweepConfig
    from tiltbench.sweep import sweep as run_sweep

    cfg = SweepConfig(
        tuple(checkpoints),
        tuple(parse_grid(tilt_rates)),
        _batch_sizes(batch_sizes),
        run_name,
        results_dir,
        MeasureConfig(**measure_settings),
        force,
    )
    with progress_bar(not json_out) as progress:
        report = run_sweep(cfg, progress)
    if json_out:
        return _emit_json({"folder": str(cfg.folder), "rows": [_without_samples(r) for r in report.rows]})
    headers, rows = table_rows(report.rows)
    out_console.print(
        table(
            f"{cfg.folder} ({report.environment['threads']} threads)",
            headers,
            rows,
            "speedup = baseline / tiltbench time (per-batch medians over rounds, summed); same inputs, interleaved",
        )
    )


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--batch-sizes must be a comma list of integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"batch sizes must be at least 1, got {text!r}")
    return sizes


def _without_samples(row: dict) -> dict:
    latency = {name: {k: v for k, v in lat.items() if k != "samples"} for name, lat in row["latency"].items()}
    return {**row, "latency": latency}


@app.command("speedup-predict")
@handle_errors
def speedup_predict(
    model: ModelOpt = "minilm",
    hidden: Annotated[
        int | None, typer.Option(help="Hidden size (with --ffn and --layers, instead of --model).")
    ] = None,
    ffn: Annotated[int | None, typer.Option(help="FFN (intermediate) size.")] = None,
    layers: Annotated[int | None, typer.Option(help="Number of encoder layers.")] = None,
    seq_len: Annotated[int, typer.Option(help="Real tokens per example, [CLS] and [SEP] included.")] = 128,
    task: Annotated[str | None, typer.Option(help="Use this task's real dev-set lengths instead of --seq-len.")] = None,
    data_dir: DataDirOpt = None,
    max_seq_len: Annotated[int, typer.Option(help="With --task: truncate to this many tokens.")] = 128,
    max_eval_samples: MaxEvalOpt = None,
    batch_size: Annotated[int, typer.Option(help="Examples per batch (matters with --profile).")] = 1,
    tilt_rate: Annotated[float | None, typer.Option(help="Predict the speedup of this rate.")] = None,
    target_speedup: Annotated[float | None, typer.Option(help="Solve for the smallest rate reaching this.")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Machine profile from `tiltbench calibrate`: predict latency.")
    ] = None,
    shape: ShapeOpt = "geometric",
    min_tokens: MinTokensOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Predict the speedup of a tilt rate (FLOP ratio; with --profile, calibrated latency), or solve for the
    rate that reaches --target-speedup."""
    if (tilt_rate is None) == (target_speedup is None):
        raise UserError("pass exactly one of --tilt-rate and --target-speedup")
    for name, value in (("--seq-len", seq_len), ("--batch-size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    from tiltbench.data import DataConfig
    from tiltbench.forecast import forecast, task_lengths
    from tiltbench.latency_model import LatencyProfile

    dims = _dims(model, hidden, ffn, layers)
    loaded = LatencyProfile.load(profile) if profile else None
    if task:
        _setup()
        data = DataConfig(task, data_dir, max_eval_samples=max_eval_samples, max_seq_len=max_seq_len)
        lengths = task_lengths(data, model)
    else:
        lengths = [seq_len] * batch_size
    result = forecast(
        dims,
        lengths,
        batch_size,
        tilt_rate=tilt_rate,
        target_speedup=target_speedup,
        shape=shape,
        min_tokens=min_tokens,
        profile=loaded,
    )  # type: ignore[arg-type]
    if json_out:
        return _emit_json(result)
    rows = [
        ["hidden / ffn / layers", f"{dims.hidden} / {dims.ffn} / {dims.layers}"],
        ["inputs", f"{task} dev set, {len(lengths)} examples" if task else f"{seq_len} tokens"],
        ["mean real length (tokens)", result["seq_len"]],
        ["batch size", batch_size],
        ["tilt rate", f"{result['tilt_rate']:g}"],
        ["mean tokens kept by layers 1..L", " ".join(map(str, result["kept_tokens"]))],
        [
            "encoder GFLOPs (2 x MACs), dense -> eliminated",
            f"{2 * result['macs_dense'] / 1e9:.3f} -> {2 * result['macs'] / 1e9:.3f}",
        ],
        ["FLOP-ratio speedup", f"{result['flop_speedup']:.3f}x"],
    ]
    if loaded:
        rows += [
            [
                "latency per batch, dense-dynamic -> tiltbench (calibrated)",
                f"{result['latency_ms_dense_dynamic']:.2f} ms -> {result['latency_ms']:.2f} ms",
            ],
            ["calibrated speedup", f"{result['predicted_speedup']:.3f}x"],
        ]
    title = "speedup-predict (calibrated latency model)" if loaded else "speedup-predict (FLOP ratio; no profile given)"
    out_console.print(table(title, ["quantity", "value"], rows))


@app.command()
@handle_errors
def calibrate(
    model: ModelOpt = "minilm",
    profile: Annotated[str | None, typer.Option(help="Where to write the profile (default: the user cache).")] = None,
    reps: Annotated[int, typer.Option(help="Timed forwards per configuration (median).")] = 3,
    max_tokens_per_batch: Annotated[int, typer.Option(help="Skip larger calibration batches.")] = 4096,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit the latency model to this machine (a couple of minutes) and save it as a machine profile."""
    _setup(threads)
    from tiltbench.calibrate import CalibrateConfig, default_profile_path
    from tiltbench.calibrate import calibrate as run_calibrate
    from tiltbench.latency_model import FEATURES, UNITS

    path = Path(profile) if profile else default_profile_path(model)
    with progress_bar(not json_out) as progress:
        result = run_calibrate(CalibrateConfig(model, reps, max_tokens_per_batch), progress)
    result.save(path)
    if json_out:
        return _emit_json({"profile": str(path), **result.fit, "coefficients": result.coefficients})
    rows = [[f, f"{result.coefficients[f]:.4g}", u] for f, u in zip(FEATURES, UNITS, strict=True)]
    out_console.print(
        table(
            f"profile -> {path}",
            ["feature", "coefficient", "unit"],
            rows,
            f"fit on {result.fit['samples']} timings: median |error| "
            f"{100 * result.fit['median_abs_rel_error']:.1f}%, max "
            f"{100 * result.fit['max_abs_rel_error']:.1f}%; {result.fit['calibration_seconds']} s",
        )
    )


@app.command()
@handle_errors
def check(
    results: Annotated[str, typer.Argument(help="A folder written by measure or sweep.")],
    profile: Annotated[str | None, typer.Option(help="Machine profile: check the calibrated prediction.")] = None,
    tolerance: Annotated[float, typer.Option(help="Allowed median |measured/predicted - 1|.")] = 0.10,
    baseline: Annotated[str | None, typer.Option(help="Another results folder: also check for regressions.")] = None,
    metric_tolerance: Annotated[float, typer.Option(help="Allowed metric drop vs the baseline, in points.")] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Compare measured speedups with the prediction (and a baseline run); exit 1 when they disagree."""
    from tiltbench.check import CheckConfig
    from tiltbench.check import check as run_check

    report = run_check(CheckConfig(results, profile, tolerance, baseline, metric_tolerance))
    if json_out:
        _emit_json(report.to_dict())
    else:
        rows = [
            [
                r["checkpoint"],
                f"{r['tilt_rate']:g}",
                r["batch_size"],
                f"{r['measured']:.3f}x",
                f"{r['predicted']:.3f}x",
                f"{100 * r['error']:+.1f}%",
            ]
            for r in report.rows
        ]
        out_console.print(
            table(
                f"check {results} ({report.prediction} prediction)",
                ["checkpoint", "tilt rate", "batch", "measured", "predicted", "error"],
                rows,
            )
        )
        verdict = "ok" if report.median_abs_error <= report.tolerance else "FAILED"
        out_console.print(
            f"median |error| {100 * report.median_abs_error:.1f}% (tolerance {100 * report.tolerance:.0f}%): {verdict}"
        )
        for line in report.regressions:
            out_console.print(f"[red]regression[/]: {line}")
    if not report.passed:
        raise typer.Exit(1)


def _dims(model: str, hidden: int | None, ffn: int | None, layers: int | None):
    from tiltbench.speedup import ModelDims

    given = [x is not None for x in (hidden, ffn, layers)]
    if all(given):
        return ModelDims(hidden, ffn, layers)  # type: ignore[arg-type]
    if any(given):
        raise UserError("pass all of --hidden, --ffn and --layers, or none (then --model is read)")
    from transformers import AutoConfig

    from tiltbench.models import resolve_model

    _setup()
    try:
        return ModelDims.from_config(AutoConfig.from_pretrained(resolve_model(model)))
    except (OSError, ValueError) as err:
        raise UserError(f"could not read the config of model {model!r}: {str(err).splitlines()[0]}") from None


def main() -> None:
    """Console entry point: click usage errors are also printed as one line (exit 2)."""
    try:
        code = app(standalone_mode=False)
    except UsageError as err:
        err_console.print(f"error: {err.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Abort:
        err_console.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
