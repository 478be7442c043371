"""Commands that train or use one checkpoint: finetune, offline-tune, predict."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from tiltbench.cli.common import (
    CheckpointArg,
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    EvalFileOpt,
    JsonOpt,
    KnobGridOpt,
    LabelColOpt,
    MaxEvalOpt,
    MaxLenOpt,
    MaxTrainOpt,
    MethodOpt,
    MinTokensOpt,
    ModelOpt,
    OptMaxLenOpt,
    OptTaskOpt,
    PairColOpt,
    QuantizeOpt,
    ScorerOpt,
    SeedOpt,
    ShapeOpt,
    TaskOpt,
    TextColOpt,
    ThreadsOpt,
    TiltRateOpt,
    TrainFileOpt,
    app,
    emit_json,
    handle_errors,
    setup,
)
from tiltbench.console import out_console, progress_bar, table
from tiltbench.errors import UserError


@app.command()
@handle_errors
def finetune(
    ctx: typer.Context,
    output: Annotated[str, typer.Option(help="Checkpoint folder to write (new or empty; see --overwrite).")],
    recipe: Annotated[
        str | None,
        typer.Option(help="A JSON/YAML recipe of finetune options (benchmarks/recipes/); options given here win."),
    ] = None,
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
    method: MethodOpt = "tilted",
    tilt_rate: TiltRateOpt = 0.0,
    shape: ShapeOpt = "geometric",
    min_tokens: MinTokensOpt = 1,
    scorer: ScorerOpt = None,
    epochs: Annotated[
        int, typer.Option(help="Epochs of the fine-tune stage (PoWER, LTP: stage 1, dense; gates: the soft stage).")
    ] = 1,
    init: Annotated[
        str | None,
        typer.Option(help="Start from this fine-tuned checkpoint (PoWER, LTP: and skip the dense stage)."),
    ] = None,
    lambda_: Annotated[
        float,
        typer.Option(
            "--lambda",
            help="PoWER: λ on Σ_l l·(retained share of layer l); gates: λ_sparse on the mean survival "
            "probability; LTP: λ on Σ_l mean soft mask.",
        ),
    ] = 0.0,
    bimodal: Annotated[float, typer.Option(help="Gates: λ_bimodal on the mean g·(1 − g).")] = 0.0,
    final_threshold: Annotated[
        float | None, typer.Option(help="LTP: threshold of the last layer before learning (default 1/max-seq-len).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="LTP: temperature T of the soft mask σ((s − θ)/T) (default θ_final/10).")
    ] = None,
    method_lr: Annotated[
        float | None,
        typer.Option(help="Learning rate of the method's own parameters (PoWER 5e-3, gates 3e-3, LTP 2e-2)."),
    ] = None,
    search_epochs: Annotated[
        int, typer.Option(help="PoWER: epochs of the configuration search; LTP: of the soft-threshold stage.")
    ] = 1,
    retrain_epochs: Annotated[
        int,
        typer.Option(help="PoWER: epochs of re-training at the learned counts; gates, LTP: of the hard stage."),
    ] = 1,
    teacher: Annotated[
        list[str] | None,
        typer.Option(
            help="Distil from this fine-tuned checkpoint of the task (tiltbench or HF classifier folder). Give it "
            "more than once for an ensemble: the teachers' mean distribution at the distillation temperature."
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Weight of the teacher term: α·T²·KL(teacher‖student) + (1 − α)·task loss.")
    ] = 0.5,
    distill_temperature: Annotated[
        float, typer.Option(help="Distillation temperature T (LTP's soft-mask T is --temperature).")
    ] = 2.0,
    distill_hidden: Annotated[
        float,
        typer.Option(
            help="With --teacher: weight of an added hidden-state term, the MSE of every layer's states to the "
            "teacher's (TinyBERT's intermediate distillation; same hidden size and depth, a teacher that removes "
            "nothing). Under elimination each kept word vector is compared with the teacher's at its position."
        ),
    ] = 0.0,
    distill_ranking: Annotated[
        float,
        typer.Option(
            help="With --teacher: weight of an added ranking term (ToP's ranking distillation): the teacher's "
            "final-layer token ranking taught to the scores the student's earlier layers select by (pairwise "
            "logistic loss; not --method gates, which decides from the layer's input)."
        ),
    ] = 0.0,
    ranking_top: Annotated[
        int | None,
        typer.Option(help="With --distill-ranking: the teacher's best tokens per row that anchor the pairs [20]."),
    ] = None,
    knob_range: Annotated[
        str | None,
        typer.Option(
            help="LOW:HIGH: train the last stage across this knob range (sandwich rule: both ends and "
            "--random-knobs draws per step; without --teacher the near-dense pass teaches the others).",
        ),
    ] = None,
    random_knobs: Annotated[int, typer.Option(help="Random knobs per sandwich step, besides the two ends.")] = 1,
    embeddings: Annotated[
        str,
        typer.Option(
            help="Input embeddings: table (the model's own) or hashed (EELBERT-style: hashed character n-grams and "
            "a projection fitted to the table, no table saved; README 'Hashed input embeddings')."
        ),
    ] = "table",
    hash_dim: Annotated[int, typer.Option(help="Hashed embeddings: features per token before the projection.")] = 768,
    hash_fit: Annotated[
        str,
        typer.Option(
            help="Hashed embeddings: fit the projection to the table's rows weighted by how often each token occurs "
            "in the task's training text (task), or every row alike (vocabulary). A hashed --init keeps its own."
        ),
    ] = "task",
    hash_align_epochs: Annotated[
        int,
        typer.Option(
            help="Hashed embeddings: epochs of hidden-state alignment before fine-tuning (the task's training text, "
            "no labels: every layer taught towards --model with its table; README 'Hashed input embeddings')."
        ),
    ] = 0,
    hash_align_lr: Annotated[float, typer.Option(help="Hashed embeddings: the alignment's learning rate.")] = 2e-4,
    save_every: Annotated[
        int,
        typer.Option(
            help="Save a resumable state every N steps (and at Ctrl-C); rerunning the command resumes. 0: Ctrl-C only."
        ),
    ] = 200,
    batch_size: Annotated[
        int, typer.Option(help="Global batch: split across processes under `accelerate launch`, and --grad-accum.")
    ] = 32,
    grad_accum: Annotated[
        int, typer.Option(help="Micro-batches per process and step (the global batch stays --batch-size).")
    ] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when a GPU is visible).")] = "auto",
    mixed_precision: Annotated[
        str, typer.Option(help="no, bf16 or fp16 (fp16 on CUDA only): autocast through accelerate.")
    ] = "no",
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 1e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a tiltbench checkpoint already in --output (never other files).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune with elimination on (tilted: at --tilt-rate; power: dense, search with --lambda, retrain; gates:
    soft with --lambda and --bimodal, then hard; ltp: dense, soft thresholds with --lambda, hard); write an HF
    checkpoint + tiltbench.json."""
    if recipe is not None:  # the recipe's values replace the defaults, then the command runs as if typed so
        return ctx.invoke(ctx.command.callback, **_with_recipe(ctx, recipe))
    setup(threads)
    from tiltbench.data import DataConfig
    from tiltbench.distill import parse_knob_range
    from tiltbench.finetune import TrainConfig
    from tiltbench.finetune import finetune as run_finetune

    data = DataConfig(
        task=task,
        data_dir=data_dir,
        train_file=train_file,
        eval_file=eval_file,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        max_seq_len=max_seq_len,
        seed=seed,
    )
    cfg = TrainConfig(
        output=output,
        data=data,
        model=model,
        method=method,
        tilt_rate=tilt_rate,
        shape=shape,  # type: ignore[arg-type]
        min_tokens=min_tokens,
        scorer=scorer,
        epochs=epochs,
        init=init,
        regulariser_weight=lambda_,
        bimodal_weight=bimodal,
        final_threshold=final_threshold,
        temperature=temperature,
        method_lr=method_lr,
        search_epochs=search_epochs,
        retrain_epochs=retrain_epochs,
        teacher=teacher,
        alpha=alpha,
        distill_temperature=distill_temperature,
        distill_hidden=distill_hidden,
        distill_ranking=distill_ranking,
        ranking_top=ranking_top,
        knob_range=parse_knob_range(knob_range),
        random_knobs=random_knobs,
        embeddings=embeddings,
        hash_dim=hash_dim,
        hash_fit=hash_fit,
        hash_align_epochs=hash_align_epochs,
        hash_align_lr=hash_align_lr,
        save_every=save_every,
        batch_size=batch_size,
        grad_accum=grad_accum,
        device=device,
        mixed_precision=mixed_precision,
        learning_rate=lr,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        overwrite=overwrite,
    )
    with progress_bar(not json_out) as progress:
        result = run_finetune(cfg, progress)
    if not result.main_process:  # another process of `accelerate launch`: the main one reports
        return None
    summary = {**result.metrics, "train_seconds": round(result.train_seconds, 2), "output": str(result.output)}
    fractions = result.method_config.get("fractions")
    if fractions is not None:
        summary["fractions"] = fractions
    if json_out:
        return emit_json(summary)
    columns = list(dict.fromkeys(k for h in result.history for k in h if k not in ("stage", "epoch")))
    out_console.print(
        table(
            f"finetune -> {result.output}",
            ["stage", "epoch", *columns],
            [[h["stage"], h.get("epoch", ""), *[h.get(k, "") for k in columns]] for h in result.history],
        )
    )
    if fractions is not None:
        shares = " ".join(f"{f:.3f}" for f in fractions)
        out_console.print(f"learned kept share of each example's real length, layers 1..L: {shares}")


def _with_recipe(ctx: typer.Context, path: str) -> dict:
    """ctx.params with the recipe's values wherever the command line left the default."""
    from tiltbench.recipe import NOT_IN_RECIPES, load_recipe

    params = {p.name: p for p in ctx.command.params}
    allowed = sorted(n for n in params if n not in NOT_IN_RECIPES)
    resolved = {**ctx.params, "recipe": None}
    for name, value in load_recipe(path).items():
        if name not in params or name in NOT_IN_RECIPES:
            shown = ", ".join(n.rstrip("_").replace("_", "-") for n in allowed)
            raise UserError(f"recipe {path!r}: {name.replace('_', '-')!r} is not a finetune setting; use: {shown}")
        source = ctx.get_parameter_source(name)  # by name: typer may vendor its own click
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            continue  # given on the command line: it wins
        try:
            if getattr(params[name], "multiple", False) and isinstance(value, str):
                value = [value]  # one path of an option that may be repeated (--teacher)
            resolved[name] = None if value is None else params[name].process_value(ctx, value)
        except Exception as err:  # click's BadParameter, from whichever click typer runs on
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            raise UserError(f"recipe {path!r}: {name.replace('_', '-')}: {message}") from None
    return resolved


@app.command("offline-tune")
@handle_errors
def offline_tune(
    checkpoint: CheckpointArg,
    tilt_rates: KnobGridOpt = None,
    max_drop: Annotated[float, typer.Option(help="Allowed metric drop vs the dense knob value, in points.")] = 1.0,
    target_speedup: Annotated[
        float | None, typer.Option(help="Choose the smallest knob value predicted to reach this.")
    ] = None,
    task: OptTaskOpt = None,
    data_dir: DataDirOpt = None,
    eval_file: EvalFileOpt = None,
    text_column: TextColOpt = "text",
    text_pair_column: PairColOpt = None,
    label_column: LabelColOpt = "label",
    max_eval_samples: MaxEvalOpt = None,
    max_seq_len: OptMaxLenOpt = None,
    batch_size: int = 64,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    dtype: DtypeOpt = "fp32",
    output: Annotated[str | None, typer.Option(help="Also write config/environment/report files here.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier offline-tune run in --output.")] = False,
    record: Annotated[
        bool, typer.Option(help="Record the chosen value in the checkpoint's tiltbench.json (off: only a look).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint over a grid of its method's knob (tilt rates for tilted) and choose one value."""
    setup(threads)
    from tiltbench.data import DataConfig
    from tiltbench.distributed import resolve_device
    from tiltbench.models import read_meta
    from tiltbench.offline import OfflineConfig, offline_table
    from tiltbench.offline import offline_tune as run_offline
    from tiltbench.schedule import parse_grid
    from tiltbench.transforms import transform_spec

    transform = transform_spec(quantize, dtype)
    data = DataConfig.for_checkpoint(
        read_meta(checkpoint),
        task,
        max_seq_len,
        data_dir=data_dir,
        eval_file=eval_file,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        max_eval_samples=max_eval_samples,
        seed=seed,
    )
    cfg = OfflineConfig(
        checkpoint=checkpoint,
        device=resolve_device(device),
        transform=transform,
        knobs=tuple(parse_grid(tilt_rates)) if tilt_rates else None,
        max_drop=max_drop,
        target_speedup=target_speedup,
        data=data,
        batch_size=batch_size,
        record=record,
        output=output,
        overwrite=overwrite,
    )
    with progress_bar(not json_out) as progress:
        report = run_offline(cfg, progress)
    if json_out:
        return emit_json(
            {
                "rows": [
                    {report.knob_name: r.knob, "metric": r.metric, "predicted_speedup": r.predicted_speedup}
                    for r in report.rows
                ],
                "method": report.method,
                "knob_name": report.knob_name,
                "chosen_knob": report.chosen_knob,
                "recorded": record,
                "transform": report.transform,
                "fp32_dense_metric": report.fp32_dense_metric,
            }
        )
    headers, rows = offline_table(report)
    numerics = "" if report.transform == "fp32" else f", {report.transform}"
    title = f"offline-tune {report.checkpoint} on {report.task} ({report.n_examples} examples{numerics})"
    caption = (
        "predicted speedup = dense encoder MACs / MACs with the counts kept (planned, or realised by an adaptive "
        "method), each example at its real length"
    )
    if report.fp32_dense_metric is not None:
        caption += (
            f"; every row under {report.transform}, drop against the {report.transform} dense knob; the fp32 "
            f"checkpoint at its dense knob: {report.fp32_dense_metric:.4f}"
        )
    out_console.print(table(title, headers, rows, caption))
    recorded = "recorded in tiltbench.json" if record else "not recorded; --record writes it into tiltbench.json"
    label = report.knob_name.replace("_", " ")
    out_console.print(f"chosen {label}: [bold]{report.chosen_knob:g}[/] ({report.criterion}; {recorded})")


@app.command()
@handle_errors
def predict(
    checkpoint: CheckpointArg,
    text: Annotated[list[str] | None, typer.Option(help="Input text (repeatable).")] = None,
    input_file: Annotated[
        str | None, typer.Option("--input", help="JSONL with 'text' and optional 'text_pair'.")
    ] = None,
    tilt_rate: Annotated[
        float | None,
        typer.Option(
            "--tilt-rate", "--knob", help="The method's knob (tilt rate for tilted). Default: the checkpoint's."
        ),
    ] = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "auto",
    quantize: QuantizeOpt = "none",
    dtype: DtypeOpt = "fp32",
    json_out: JsonOpt = False,
) -> None:
    """Classify texts at a knob value; print label, logits and the realised kept tokens per layer."""
    setup(threads)
    from tiltbench.distributed import resolve_device
    from tiltbench.inference import predict_texts
    from tiltbench.models import load_checkpoint, read_meta
    from tiltbench.patch import method_of, set_knob
    from tiltbench.transforms import apply_spec, check_transform, transform_spec

    device = resolve_device(device)  # before any loading
    transform = check_transform(transform_spec(quantize, dtype), device)
    meta = read_meta(checkpoint)
    texts, pairs = _inputs(text, input_file)
    model, tokenizer, meta, info = load_checkpoint(checkpoint)
    model.to(device)
    method_of(model).to(device)
    model, _ = apply_spec(model, transform)
    if tilt_rate is not None:
        set_knob(model, tilt_rate)
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
    from tiltbench.inference import read_inputs

    texts: list[str] = list(text or [])
    pairs: list[str | None] = [None] * len(texts)
    if input_file:
        if texts:
            raise UserError("pass --text or --input, not both")
        texts, pairs = read_inputs(input_file)
    if not texts:
        raise UserError("nothing to predict: pass --text or --input")
    return texts, pairs if any(p is not None for p in pairs) else None
