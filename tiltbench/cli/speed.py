"""Commands about the speedup model: speedup-predict, calibrate, check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tiltbench.cli.common import (
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MaxEvalOpt,
    MinTokensOpt,
    ModelOpt,
    QuantizeOpt,
    ShapeOpt,
    ThreadsOpt,
    app,
    emit_json,
    handle_errors,
    setup,
)
from tiltbench.console import out_console, progress_bar, table
from tiltbench.errors import UserError


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
    tilt_rate: Annotated[
        float | None,
        typer.Option("--tilt-rate", "--knob", help="Predict the speedup of this rate (with --checkpoint: its knob)."),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(help="A tiltbench checkpoint: its model sizes, tokenizer and method (learned fractions too)."),
    ] = None,
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
        raise UserError("pass exactly one of --tilt-rate (--knob) and --target-speedup")
    for name, value in (("--seq-len", seq_len), ("--batch-size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    from tiltbench.data import DataConfig
    from tiltbench.speed_model import LatencyProfile, forecast, task_lengths

    method = None
    if checkpoint:
        from tiltbench.models import method_from_meta, read_meta
        from tiltbench.speed_model import ModelDims

        meta = read_meta(checkpoint)
        config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
        dims = ModelDims(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"])
        method = method_from_meta(meta, dims.layers)
        model = checkpoint  # its tokenizer gives the task's lengths
    else:
        dims = _dims(model, hidden, ffn, layers)
    loaded = LatencyProfile.load(profile) if profile else None
    if task:
        setup()
        data = DataConfig(task, data_dir=data_dir, max_eval_samples=max_eval_samples, max_seq_len=max_seq_len)
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
        method=method,
    )  # type: ignore[arg-type]
    if json_out:
        return emit_json(result)
    n = len(lengths)
    rows = [
        ["hidden / ffn / layers", f"{dims.hidden} / {dims.ffn} / {dims.layers}"],
        ["inputs", f"{task} dev set, {len(lengths)} examples" if task else f"{seq_len} tokens"],
        ["mean real length (tokens)", result["seq_len"]],
        ["batch size", batch_size],
        [f"{result['method']} {result['knob_name'].replace('_', ' ')}", f"{result['knob']:g}"],
        ["mean tokens kept by layers 1..L", " ".join(map(str, result["kept_tokens"]))],
        [
            "encoder GFLOPs per example (2 x MACs), dense -> eliminated",
            f"{2 * result['macs_dense'] / n / 1e9:.3f} -> {2 * result['macs'] / n / 1e9:.3f}",
        ],
        [
            f"encoder GFLOPs in total over the {n} examples, dense -> eliminated",
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
    reps: Annotated[int, typer.Option(help="Timed rounds over all configurations (median per one).")] = 3,
    max_tokens_per_batch: Annotated[int, typer.Option(help="Skip larger calibration batches.")] = 16384,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    dtype: DtypeOpt = "fp32",
    json_out: JsonOpt = False,
) -> None:
    """Fit the latency model to this machine (about 3.5 minutes on 2 cores) and save it as a machine profile."""
    setup(threads)
    from tiltbench.calibrate import CalibrateConfig, check_profile_path, default_profile_path
    from tiltbench.calibrate import calibrate as run_calibrate
    from tiltbench.distributed import resolve_device
    from tiltbench.speed_model import FEATURES, UNITS
    from tiltbench.transforms import check_transform, transform_spec

    device = resolve_device(device)
    transform = check_transform(transform_spec(quantize, dtype), device)
    path = check_profile_path(Path(profile) if profile else default_profile_path(model, device, transform))
    with progress_bar(not json_out) as progress:
        cfg = CalibrateConfig(
            model, reps=reps, max_tokens_per_batch=max_tokens_per_batch, device=device, transform=transform
        )
        result = run_calibrate(cfg, progress)
    result.save(path)
    if json_out:
        return emit_json(
            {
                "profile": str(path),
                **result.fit,
                "coefficients": result.coefficients,
                "large_batch_threshold_tokens": result.large_batch,
                "transform": result.transform,
            }
        )
    rows = [[f, f"{result.coefficients[f]:.4g}", u] for f, u in zip(FEATURES, UNITS, strict=True)]
    out_console.print(
        table(
            f"profile -> {path}",
            ["feature", "coefficient", "unit"],
            rows,
            f"fit on {result.fit['samples']} timings: median |error| "
            f"{100 * result.fit['median_abs_rel_error']:.1f}%, max "
            f"{100 * result.fit['max_abs_rel_error']:.1f}%; {result.fit['calibration_seconds']} s; large-batch "
            f"threshold T: {'none' if result.large_batch is None else f'{result.large_batch:,} tokens'}",
        )
    )


@app.command()
@handle_errors
def check(
    results: Annotated[str, typer.Argument(help="A folder written by measure or sweep.")],
    profile: Annotated[
        list[str] | None,
        typer.Option(
            help="Machine profile: check the calibrated prediction. Repeatable, one per transform: each row is "
            "predicted by the profile calibrated under its own transform (calibrate --quantize/--dtype)."
        ),
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Allowed median |measured/predicted - 1|.")] = 0.10,
    baseline: Annotated[str | None, typer.Option(help="Another results folder: also check for regressions.")] = None,
    metric_tolerance: Annotated[float, typer.Option(help="Allowed metric drop vs the baseline, in points.")] = 1.0,
    quantize: Annotated[str | None, typer.Option(help="Check only the rows under none or int8.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Check only the rows under fp32 or bf16.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare measured speedups with the prediction (and a baseline run); exit 1 when they disagree."""
    from tiltbench.check import CheckConfig
    from tiltbench.check import check as run_check
    from tiltbench.rows import knob_label
    from tiltbench.transforms import transform_spec

    only = None if quantize is None and dtype is None else transform_spec(quantize or "none", dtype or "fp32")
    report = run_check(
        CheckConfig(
            results,
            profile=tuple(profile or ()),
            tolerance=tolerance,
            baseline=baseline,
            metric_tolerance=metric_tolerance,
            transform=only,
        )
    )
    if json_out:
        emit_json(report.to_dict())
    else:
        rows = [
            [
                r.checkpoint,
                f"{knob_label(r.knob_name, short=True)} {r.knob:g}"
                + ("" if r.transform == "fp32" else f" {r.transform}"),
                r.batch_size,
                f"{r.measured:.3f}x",
                f"{r.predicted:.3f}x",
                f"{100 * r.error:+.1f}%" if r.counted else "(reference)",
            ]
            for r in report.rows
        ]
        out_console.print(
            table(
                f"check {results} ({report.prediction} prediction)",
                ["checkpoint", "knob", "batch", "measured", "predicted", "error"],
                rows,
                "measured = speedup vs dense-dynamic (an int8/bf16 row: vs the same-transform dense model, what "
                "its profile predicts); rows at the dense knob (tilt 0, scale 0) are 1 vs 1 by "
                "construction and not counted",
            )
        )
        if report.median_abs_error is None:
            out_console.print("no row removes tokens: the prediction was not checked")
        else:
            verdict = "ok" if report.prediction_ok else "FAILED"
            out_console.print(
                f"median |error| over the rows that remove tokens: {100 * report.median_abs_error:.1f}% "
                f"(tolerance {100 * report.tolerance:.0f}%): {verdict}"
            )
        if baseline:
            out_console.print(
                f"against {baseline}: "
                + (f"{len(report.regressions)} regressions" if report.regressions else "no regressions")
            )
        for line in report.regressions:
            out_console.print(f"[red]regression[/]: {line}", highlight=False)
        for line in report.notes:
            out_console.print(f"note: {line}", highlight=False)
    if not report.passed:
        raise typer.Exit(1)


def _dims(model: str, hidden: int | None, ffn: int | None, layers: int | None):
    from tiltbench.speed_model import ModelDims

    given = [x is not None for x in (hidden, ffn, layers)]
    if all(given):
        return ModelDims(hidden, ffn, layers)  # type: ignore[arg-type]
    if any(given):
        raise UserError("pass all of --hidden, --ffn and --layers, or none (then --model is read)")
    from transformers import AutoConfig

    from tiltbench.models import resolve_model

    setup()
    try:
        return ModelDims.from_config(AutoConfig.from_pretrained(resolve_model(model)))
    except (OSError, ValueError) as err:
        raise UserError(f"could not read the config of model {model!r}: {str(err).splitlines()[0]}") from None
