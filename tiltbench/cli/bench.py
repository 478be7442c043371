"""Commands that measure: measure and sweep (results/<run>/ folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiltbench.cli.common import (
    BatchSizesOpt,
    CheckpointArg,
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    EvalFileOpt,
    ForceOpt,
    FvcoreOpt,
    JsonOpt,
    KnobGridOpt,
    LabelColOpt,
    LatencyExamplesOpt,
    MaxEvalOpt,
    MinItersOpt,
    MinSecondsOpt,
    OptMaxLenOpt,
    OptTaskOpt,
    PadToMaxOpt,
    PairColOpt,
    QuantizeOpt,
    ResultsDirOpt,
    RunNameOpt,
    SeedOpt,
    TextColOpt,
    ThreadsOpt,
    TransformsOpt,
    WarmupOpt,
    app,
    emit_json,
    handle_errors,
    setup,
)
from tiltbench.console import err_console, out_console, progress_bar, table
from tiltbench.errors import UserError


@app.command()
@handle_errors
def measure(
    checkpoint: CheckpointArg,
    tilt_rates: KnobGridOpt = None,
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
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    dtype: DtypeOpt = "fp32",
    transforms: TransformsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Latency, FLOPs and the task metric of one checkpoint over tilt rates and batch sizes, against dense
    baselines run interleaved in the same process; writes results/<run-name>/."""
    settings = dict(locals())
    settings["checkpoints"] = [settings.pop("checkpoint")]
    settings["run_name"] = run_name or f"measure-{Path(checkpoint).resolve().name}"
    _run_sweep(command="measure", **settings)


@app.command()
@handle_errors
def sweep(
    checkpoint: Annotated[
        list[str],
        typer.Option(
            help="A tiltbench checkpoint (repeatable, to compare methods); CKPT@GRID gives it its own knob grid, "
            "e.g. runs/power@0,0.5,1."
        ),
    ],
    tilt_rates: KnobGridOpt = None,
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
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    dtype: DtypeOpt = "fp32",
    transforms: TransformsOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="i/N: measure only the i-th (0-based) of N round-robin parts of the grid, into "
            "<run-name>.shard-i-of-N; join the parts with `tiltbench merge`."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Checkpoints x knob values x batch sizes, one measured row each; resumable (reruns skip finished rows)."""
    settings = dict(locals())
    settings["checkpoints"] = settings.pop("checkpoint")
    settings["run_name"] = run_name or "sweep"
    _run_sweep(command="sweep", **settings)


@app.command()
@handle_errors
def merge(
    shards: Annotated[list[str], typer.Argument(help="The shard folders of one `sweep --shard i/N`, all N of them.")],
    run_name: RunNameOpt = None,
    results_dir: ResultsDirOpt = "results",
    allow_mixed_hardware: Annotated[
        bool, typer.Option(help="Merge shards measured on different CPUs, core or thread counts, or GPUs.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an earlier merge in the output folder.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Join the shard folders of a sharded sweep into one run folder (rows keep their own environment; no time
    is ever divided by one taken in another shard)."""
    from tiltbench.merge import MergeConfig
    from tiltbench.merge import merge as run_merge

    folder, report = run_merge(
        MergeConfig(
            tuple(shards),
            run_name=run_name,
            results_dir=results_dir,
            allow_mixed_hardware=allow_mixed_hardware,
            force=force,
        )
    )
    if json_out:
        return emit_json({"folder": str(folder), "rows": len(report.rows), "shards": report.config["merged_from"]})
    mixed = " (mixed hardware: each row keeps its own environment)" if report.environment["mixed_hardware"] else ""
    out_console.print(
        f"merged {len(shards)} shards, {len(report.rows)} rows -> {folder}{mixed}", markup=False, highlight=False
    )


def _run_sweep(
    command: str,
    checkpoints: list[str],
    tilt_rates: str | None,
    batch_sizes: str,
    run_name: str,
    results_dir: str,
    force: bool,
    threads: int | None,
    json_out: bool,
    shard: str | None = None,
    quantize: str = "none",
    dtype: str = "fp32",
    transforms: str | None = None,
    **measure_settings,
) -> None:
    setup(threads)
    from tiltbench.distributed import resolve_device
    from tiltbench.measure import MeasureConfig
    from tiltbench.transforms import parse_transforms, transform_spec

    single = transform_spec(quantize, dtype)
    if transforms is not None and (quantize, dtype) != ("none", "fp32"):
        raise UserError("give --transforms, or --quantize/--dtype, not both")
    numerics = parse_transforms(transforms) if transforms is not None else (single,)

    measure_settings["device"] = resolve_device(measure_settings.get("device", "auto"))
    from tiltbench.results import screen_tables
    from tiltbench.schedule import parse_grid
    from tiltbench.sweep import SweepConfig, SweepInterrupted, parse_shard
    from tiltbench.sweep import sweep as run_sweep

    grids = {}
    for i, entry in enumerate(checkpoints):
        path, at, grid = entry.rpartition("@") if "@" in entry else (entry, "", "")
        if at:
            checkpoints[i], grids[path] = path, tuple(parse_grid(grid))
    cfg = SweepConfig(
        checkpoints=tuple(checkpoints),
        knobs=tuple(parse_grid(tilt_rates)) if tilt_rates else None,
        batch_sizes=_batch_sizes(batch_sizes),
        run_name=run_name,
        results_dir=results_dir,
        measure=MeasureConfig(**measure_settings),
        force=force,
        command=command,
        grids=grids,
        shard=parse_shard(shard) if shard is not None else None,
        transforms=numerics,
    )
    try:
        with progress_bar(not json_out) as progress:
            report = run_sweep(cfg, progress)
    except SweepInterrupted as interrupted:
        err_console.print(str(interrupted), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if report.skipped and not json_out:
        err_console.print(
            f"resumed: {report.skipped} rows already in {cfg.folder} were kept, not measured again "
            "(--force redoes them)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if json_out:
        return emit_json(
            {
                "folder": str(cfg.folder),
                "skipped": report.skipped,
                "rows": [row.to_dict(samples=False) for row in report.rows],
            }
        )
    baseline = cfg.measure.headline_baseline
    for checkpoint, headers, rows in screen_tables(report.rows):
        out_console.print(
            table(
                f"{checkpoint} ({report.environment['threads']} threads) -> {cfg.folder}",
                headers,
                rows,
                "knob: tilt rate (tilted) or retention scale (power); drop: metric points below the dense knob "
                "(a transformed table: below HF's dense fp32 model); "
                f"ms/batch: tiltbench p50; speedup = {baseline} time / "
                "tiltbench time (per-batch medians over rounds, summed; same inputs, interleaved) = padding "
                "(skipping the batch's padding, net of the eliminating path's overhead: below 1 when there is "
                "little padding) x removal (the removed tokens), times the transform's own gain in an int8/bf16 "
                "table, whose 'vs dense-int8' column is against the same-transform dense model; FLOPs: the "
                "FLOP-ratio prediction. "
                "Every column: report.md, report.csv, report.json.",
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
