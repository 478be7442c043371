"""finetune(cfg): fine-tune a BERT-layout model with word-vector elimination on (TiltedBERT's single stage).

AdamW, linear warm-up then linear decay, gradient clipping at 1.0, seeded; evaluation after every epoch.
Elimination is active in training exactly as at inference: top-k + gather pass gradients to the kept tokens.

References: Kachuee & Sharifkhani, arXiv 2201.03327 (abstract: "no extra training steps"); methods.md §2.2, §8.5.
Distillation (`teacher`) and training across a knob range (`knob_range`, the sandwich rule): tiltbench/distill.py.
Devices, mixed precision, gradient accumulation and several processes (`accelerate launch`): tiltbench/distributed.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from dataclasses import KW_ONLY, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from tiltbench.data import DataConfig, TaskInfo, collate, encode, load_split
from tiltbench.distill import (
    Distillation,
    load_teacher,
    ranking_loss,
    sandwich_knobs,
    teacher_final_scores,
    teacher_paths,
)
from tiltbench.distributed import DEVICES, MIXED_PRECISION, evaluate_across, make_accelerator, on_device, share
from tiltbench.environment import environment
from tiltbench.errors import TrainingInterrupted, UserError
from tiltbench.files import check_output_dir, is_checkpoint, normal_modes, replace_dir, write_json_atomic
from tiltbench.inference import Progress
from tiltbench.models import DEFAULT_MODEL, METHOD_WEIGHTS, load_model, save_hashed, write_meta
from tiltbench.patch import find_encoder, is_patched, patch, set_knob
from tiltbench.resume import (
    Cursor,
    interruptible,
    load_state,
    random_states,
    restore_random_states,
    save_state,
    state_dir,
)
from tiltbench.schedule import Schedule, Shape

HASH_ALIGN_LR = 2e-4  # --hash-align-lr's default
HASH_FITS = ("task", "vocabulary")  # --hash-fit: weight the table's rows by the task's token counts, or alike


# TrainConfig fields whose command-line option has another name
_OPTION_NAMES = {"learning_rate": "--lr", "regulariser_weight": "--lambda", "bimodal_weight": "--bimodal"}


@dataclass(frozen=True)
class TrainConfig:
    output: str
    data: DataConfig = field(default_factory=DataConfig)
    _: KW_ONLY  # the rest by name: a dozen positional settings are unreadable and easy to shift
    model: str = DEFAULT_MODEL
    method: str = "tilted"  # a name in tiltbench.methods.METHODS
    tilt_rate: float = 0.0  # TiltedBERT's knob while training
    shape: Shape = "geometric"
    min_tokens: int = 1
    scorer: str | None = None  # None: the method's own (acc for tilted, acc-nodiag for power)
    epochs: int = 1  # the fine-tune stage (PoWER: stage 1, dense)
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_batch_size: int = 64
    overwrite: bool = False  # replace an existing tiltbench checkpoint at `output` (anything else is refused)
    # methods with more stages (PoWER-BERT): see methods/<name>.py `stages`
    init: str | None = None  # start from this fine-tuned checkpoint and skip the dense stage
    regulariser_weight: float = 0.0  # λ: weight of the method's regulariser in its search stage
    method_lr: float | None = None  # learning rate of the method's own parameters (None: the method's default)
    search_epochs: int = 1
    retrain_epochs: int = 1
    bimodal_weight: float = 0.0  # gates: λ_bimodal, weight of mean g (1 − g) (λ_sparse is regulariser_weight)
    final_threshold: float | None = None  # ltp: θ of the last layer before learning (None: 1 / max_seq_len)
    temperature: float | None = None  # ltp: T of the soft mask σ((s − θ) / T) (None: θ_final / 10)
    # accuracy at speed (tiltbench/distill.py)
    # distil from this checkpoint's logits (a tiltbench or HF classifier of the task), or from an ensemble's: a
    # list of several, their mean distribution at the distillation temperature (tiltbench/distill.py)
    teacher: str | list[str] | None = None  # a Path, tuple or one-item list is normalised to these
    alpha: float = 0.5  # weight of the teacher term (1 − alpha on the task loss)
    distill_temperature: float = 2.0  # T of the softened distributions (not LTP's `temperature`)
    # weight of a hidden-state term added to the teacher's (TinyBERT's intermediate-layer distillation): the MSE of
    # every layer's hidden states to the teacher's, over real tokens, as the [eel] alignment computes it. Needs a
    # teacher of the same hidden size and depth, and training with nothing removed (the states must line up)
    distill_hidden: float = 0.0
    # weight of a ranking term (ToP's ranking distillation, tiltbench/distill.py): the teacher's final-layer token
    # ranking taught to the scores the student's earlier layers select by; `ranking_top`: how many of the teacher's
    # best tokens per row anchor the pairs (ToP: 20)
    distill_ranking: float = 0.0
    ranking_top: int | None = None  # None: 20
    knob_range: tuple[float, float] | None = None  # the last stage trains across [a, b] (sandwich rule)
    random_knobs: int = 1  # knobs drawn uniformly in the range per step, besides its two ends
    save_every: int = 200  # steps between resumable states (tiltbench/resume.py); 0: only at Ctrl-C
    # where and how (tiltbench/distributed.py); batch_size stays the global batch whatever the process count
    device: str = "auto"  # cpu, cuda, or auto (cuda when visible)
    mixed_precision: str = "no"  # no, bf16 or fp16 (autocast and, for fp16, loss scaling, by accelerate)
    grad_accum: int = 1  # micro-batches per process and step
    # [eel] input embeddings: "table" (the model's own) or "hashed" (tiltbench/transforms/hashed.py: no table,
    # a projection of hashed character n-grams fitted to the table, then fine-tuned with the rest)
    embeddings: str = "table"
    hash_dim: int = 768  # features per token before the projection (hashed only)
    # how the projection is fitted to the table (hashed only): "task" weights each vocabulary row by how often its
    # token occurs in the task's training text (+1), "vocabulary" weights every row alike (transforms/hashed.py)
    hash_fit: str = "task"
    # [eel] epochs of hidden-state alignment before the method's stages (hashed only): on the task's training text,
    # labels unused, every layer's hidden states are taught towards those of --model with its own table (MSE over
    # real tokens; the weights and the projection all train). Our stand-in for EELBERT's MLM pre-training.
    hash_align_epochs: int = 0
    hash_align_lr: float = HASH_ALIGN_LR  # its learning rate (its own warm-up and linear decay)

    def __post_init__(self) -> None:
        from tiltbench.methods import get_method

        # one spelling per setting (the resume fingerprint and tiltbench.json record it): one teacher is a path,
        # an ensemble a list of them, whether the API got a Path, a tuple or a one-item list
        paths = teacher_paths(self.teacher)  # and no teacher named twice
        object.__setattr__(self, "teacher", paths[0] if len(paths) == 1 else list(paths) or None)

        for item in fields(self):  # typer and YAML both read "inf" and "nan" as floats: no setting may be either
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                option = _OPTION_NAMES.get(item.name, "--" + item.name.replace("_", "-"))
                raise UserError(f"{option} must be a finite number, got {value}")
        get_method(self.method)
        if self.method == "tilted":
            Schedule(1, self.tilt_rate, self.shape, None, self.min_tokens)  # validates rate, shape, min tokens
        elif self.tilt_rate:
            raise UserError(f"--tilt-rate goes with --method tilted, not {self.method!r}")
        if self.min_tokens < 1:
            raise UserError(f"--min-tokens must be at least 1 ([CLS] is always kept), got {self.min_tokens}")
        if min(self.epochs, self.search_epochs, self.retrain_epochs) < 1 or self.batch_size < 1:
            raise UserError("--epochs, --search-epochs, --retrain-epochs and --batch-size must be at least 1")
        if self.eval_batch_size < 1:
            raise UserError("--eval-batch-size must be at least 1")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError("--lr must be positive and --warmup-ratio in [0, 1)")
        if self.regulariser_weight < 0 or (self.method_lr is not None and self.method_lr <= 0):
            raise UserError("--lambda must be >= 0 and --method-lr positive")
        if not self.bimodal_weight >= 0:
            raise UserError(f"--bimodal must be >= 0, got {self.bimodal_weight}")
        if any(v is not None and not v > 0 for v in (self.temperature, self.final_threshold)):
            raise UserError("--temperature and --final-threshold must be positive")
        from tiltbench.distill import Distillation

        Distillation(self.alpha, self.distill_temperature)  # validates both
        ensemble = isinstance(self.teacher, list)
        for flag, weight in (("--distill-hidden", self.distill_hidden), ("--distill-ranking", self.distill_ranking)):
            if ensemble and weight:
                raise UserError(f"{flag} teaches one teacher's word vectors or ranking; give one --teacher with "
                                "it, not an ensemble")  # fmt: skip
        if self.distill_hidden < 0:
            raise UserError(f"--distill-hidden must be >= 0, got {self.distill_hidden}")
        if self.distill_hidden and self.teacher is None:
            raise UserError("--distill-hidden goes with --teacher: it teaches the teacher's hidden states")
        if self.distill_hidden and self.method != "tilted":
            raise UserError(
                f"--distill-hidden is built for --method tilted (its kept word vectors are compared with the "
                f"teacher's at the same positions), not {self.method}"
            )
        if self.distill_ranking < 0:
            raise UserError(f"--distill-ranking must be >= 0, got {self.distill_ranking}")
        if self.ranking_top is not None and (self.ranking_top < 1 or not self.distill_ranking):
            raise UserError(f"--ranking-top goes with --distill-ranking and is at least 1, got {self.ranking_top}")
        if self.distill_ranking and self.teacher is None:
            raise UserError("--distill-ranking goes with --teacher: it teaches the teacher's final-layer ranking")
        if self.distill_ranking and get_method(self.method).decides_before_attention:
            raise UserError(f"--distill-ranking teaches the scores a layer's attention gives its tokens; --method "
                            f"{self.method} decides from the layer's input, not from attention scores")  # fmt: skip
        if self.distill_ranking and self.method == "tilted" and not self.tilt_rate and self.knob_range is None:
            raise UserError("--distill-ranking teaches the layers that remove tokens; at --tilt-rate 0 none does "
                            "(give --tilt-rate or --knob-range)")  # fmt: skip
        if self.knob_range is not None:
            low, high = self.knob_range
            if not low < high:
                raise UserError(f"--knob-range needs LOW < HIGH, got {low:g}:{high:g}")
            if self.tilt_rate:
                raise UserError("--tilt-rate and --knob-range exclude each other: the range sets the knobs trained")
        if self.device not in DEVICES:
            raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            choices = ", ".join(MIXED_PRECISION)
            raise UserError(f"--mixed-precision must be one of {choices}, got {self.mixed_precision!r}")
        if self.grad_accum < 1:
            raise UserError(f"--grad-accum must be at least 1, got {self.grad_accum}")
        if self.save_every < 0:
            raise UserError(f"--save-every must be >= 0, got {self.save_every}")
        if self.random_knobs < 0:
            raise UserError(f"--random-knobs must be >= 0, got {self.random_knobs}")
        if self.embeddings not in ("table", "hashed"):
            raise UserError(f"--embeddings must be table or hashed, got {self.embeddings!r}")
        if self.embeddings == "hashed":
            from tiltbench.transforms.hashed import HashedConfig

            HashedConfig(self.hash_dim)  # validates it
        elif self.hash_dim != 768:
            raise UserError("--hash-dim goes with --embeddings hashed")
        if self.hash_fit not in HASH_FITS:
            raise UserError(f"--hash-fit must be {' or '.join(HASH_FITS)}, got {self.hash_fit!r}")
        if self.hash_fit != "task" and self.embeddings != "hashed":
            raise UserError("--hash-fit goes with --embeddings hashed")
        if self.hash_align_epochs < 0 or not self.hash_align_lr > 0:
            raise UserError("--hash-align-epochs must be >= 0 and --hash-align-lr positive")
        if (self.hash_align_epochs or self.hash_align_lr != HASH_ALIGN_LR) and self.embeddings != "hashed":
            raise UserError("--hash-align-epochs and --hash-align-lr go with --embeddings hashed")
        if self.scorer is not None and not get_method(self.method).uses_scorer:
            raise UserError(f"--scorer does not apply to --method {self.method} (it ranks tokens by its own score)")
        own = {"gates": ("bimodal_weight",), "ltp": ("final_threshold", "temperature")}
        defaults = {"bimodal_weight": 0.0, "final_threshold": None, "temperature": None}
        for method, names in own.items():
            for name in names:
                if self.method != method and getattr(self, name) != defaults[name]:
                    flag = {"bimodal_weight": "--bimodal"}.get(name, "--" + name.replace("_", "-"))
                    raise UserError(f"{flag} goes with --method {method}, not {self.method!r}")

    @property
    def knob(self) -> float:
        """The knob the single fine-tune stage trains at and saves (TiltedBERT's Tilt-Rate; with a knob range, its
        end farther from dense: the checkpoint opens at the fastest point it was trained for)."""
        if self.knob_range is not None:
            from tiltbench.distill import far_end
            from tiltbench.methods import get_method

            return far_end(self.knob_range, get_method(self.method).dense_knob)
        return self.tilt_rate


@dataclass
class FinetuneResult:
    output: Path
    metrics: dict[str, float]
    history: list[dict]
    train_seconds: float
    stages: list[dict] = field(default_factory=list)  # name, epochs, seconds, metrics of each training stage
    method_config: dict = field(default_factory=dict)  # e.g. PoWER's learned fractions
    main_process: bool = True  # False in the other processes of `accelerate launch` (they print nothing)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Run:
    """What every stage and epoch of one fine-tune shares, and what they accumulate."""

    cfg: TrainConfig
    model: torch.nn.Module
    tokenizer: object
    method: torch.nn.Module  # a tiltbench.methods.Method
    info: TaskInfo
    train: list[dict]
    evaluation: list[dict]
    pad_id: int
    generator: torch.Generator
    total_epochs: int
    progress: Progress | None
    accelerator: object  # accelerate.Accelerator
    ddp: torch.nn.Module  # `model` as accelerate prepared it (DDP under several processes): what training calls
    teachers: list[torch.nn.Module] = field(default_factory=list)  # --teacher: one, or an ensemble's members
    align_teacher: torch.nn.Module | None = None  # --hash-align-epochs: --model with its table
    distillation: Distillation | None = None
    knob_rng: random.Random = field(default_factory=random.Random)  # the sandwich's draws (not the data order's)
    resume_dir: Path | None = None
    stop: dict = field(default_factory=lambda: {"interrupted": False})  # set by Ctrl-C (resume.interruptible)
    cursor: Cursor = field(default_factory=Cursor)
    done_epochs: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # one entry per epoch
    stages: list[dict] = field(default_factory=list)  # one entry per stage
    embeddings: dict | None = None  # hashed input embeddings: their settings and fit (tiltbench.json)


def finetune(cfg: TrainConfig, progress: Progress | None = None) -> FinetuneResult:
    """Train cfg.model on cfg.data's task with cfg.method's recipe and save a tiltbench checkpoint to cfg.output.

    TiltedBERT: one stage, elimination on at cfg.tilt_rate. PoWER-BERT: dense fine-tune (or cfg.init), search
    (soft weights + λ), retrain (hard, learned counts). Every stage has its own optimiser and warm-up."""
    from tiltbench.methods import TrainStage, get_method

    output = check_output_dir(cfg.output, "a tiltbench checkpoint", is_checkpoint, cfg.overwrite)
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision)
    main = accelerator.is_main_process
    progress = progress if main else None  # one bar, from the main process
    seed_everything(cfg.data.seed)
    train_set, info = load_split(cfg.data, "train")
    eval_set, info = load_split(cfg.data, "eval", info)
    model, tokenizer = load_model(cfg.init or cfg.model, info)
    train_encoded = encode(train_set, tokenizer, cfg.data.max_seq_len)
    embeddings = _input_embeddings(model, tokenizer, cfg, train_encoded)
    layers = model.config.num_hidden_layers
    method = get_method(cfg.method).for_training(layers, cfg, model.config)
    patch(model, method=method)
    pad_id = tokenizer.pad_token_id or 0
    stages = method.stages(cfg)
    align_teacher = None
    if cfg.hash_align_epochs:
        align_teacher = _align_teacher(cfg, info, model)
        stages = [TrainStage("align", cfg.hash_align_epochs, align=True, lr=cfg.hash_align_lr), *stages]
        embeddings = {**embeddings, "align": {"epochs": cfg.hash_align_epochs, "lr": cfg.hash_align_lr,
                                              "towards": cfg.model}}  # fmt: skip
    if cfg.knob_range is not None:
        for knob in cfg.knob_range:
            method.schedule(knob)  # UserError now, not after hours of training, when the range leaves the knob's
    teachers = [load_teacher(path, info, tokenizer) for path in teacher_paths(cfg.teacher)]
    teacher = teachers[0] if len(teachers) == 1 else None  # the one the hidden and ranking terms may read
    teacher_shown = repr(cfg.teacher) if teacher is not None else ""
    if teacher is not None and cfg.distill_hidden:
        if not _same_shape(teacher, model):
            raise UserError(f"--distill-hidden needs a --teacher of the student's hidden size and depth; "
                            f"{teacher_shown} has another")  # fmt: skip
    if teacher is not None and (cfg.distill_hidden or cfg.distill_ranking):
        if is_patched(teacher) and teacher._tiltbench.eliminating:  # its states would have fewer tokens
            flag = "--distill-hidden" if cfg.distill_hidden else "--distill-ranking"
            raise UserError(f"{flag} needs a --teacher that removes no tokens; {teacher_shown} does at its saved knob "
                            "(offline-tune it to its dense knob, or give a dense teacher)")  # fmt: skip
    if teacher is not None and cfg.distill_ranking:
        try:
            find_encoder(teacher)  # a BERT-layout encoder whose last layer can be scored, or one UserError now
        except UserError as err:
            raise UserError(f"--teacher {teacher_shown}: {err}") from None
    model.to(accelerator.device)
    method.to(accelerator.device)  # outside the HF model: placed (and, under DDP, reduced) by us
    for member in teachers:
        member.to(accelerator.device)
    if align_teacher is not None:
        align_teacher.to(accelerator.device)
    run = _Run(
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        method=method,
        info=info,
        train=train_encoded,
        evaluation=encode(eval_set, tokenizer, cfg.data.max_seq_len),
        pad_id=pad_id,
        generator=torch.Generator().manual_seed(cfg.data.seed),
        total_epochs=sum(stage.epochs for stage in stages),
        progress=progress,
        accelerator=accelerator,
        ddp=accelerator.prepare_model(model),  # DDP and autocast where asked; the same module otherwise
        teachers=teachers,
        align_teacher=align_teacher,
        distillation=Distillation(cfg.alpha, cfg.distill_temperature) if (teachers or cfg.knob_range) else None,
        knob_rng=random.Random(cfg.data.seed + 1),
        embeddings=embeddings,
    )
    run.resume_dir = state_dir(output)
    saved = load_state(run.resume_dir, cfg)
    if saved is not None:
        _restore(run, saved)
        for stage in stages[: run.cursor.stage]:  # what finished stages read off their (restored) parameters
            method.end_stage(stage)
    # The stage the saved state stopped in: only it gets the saved optimiser back. (Not `run.cursor.stage` at the
    # time: once that stage ends the cursor names the next one, which must start with a fresh optimiser.)
    resumed_stage = run.cursor.stage if saved is not None else None
    with interruptible() as run.stop:
        for number, stage in enumerate(stages):
            if number >= run.cursor.stage:
                optimizer_state = saved["optimizer"] if number == resumed_stage else None
                _train_stage(run, stage, len(stages) > 1, number == len(stages) - 1, number, optimizer_state)
    final_knob = stages[-1].knob if stages[-1].knob is not None else method.dense_knob
    set_knob(model, final_knob)
    accelerator.unwrap_model(run.ddp, keep_fp32_wrapper=False)  # model.forward without accelerate's autocast
    model.to("cpu")  # the checkpoint, and the method's saved tensors, load anywhere
    method.to("cpu")
    try:
        if main:
            # Written beside the target and moved into place whole: an interrupted save leaves the old folder as it was.
            staged = output.parent / f".{output.name}.partial-{os.getpid()}"
            try:
                _save(staged, run, final_knob)
                normal_modes(staged)
                replace_dir(staged, output)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            shutil.rmtree(run.resume_dir, ignore_errors=True)  # the checkpoint is whole: nothing left to resume
    finally:  # the other processes wait for the save, and are released even when it fails
        accelerator.wait_for_everyone()
    return FinetuneResult(
        output=output,
        metrics=run.history[-1],
        history=run.history,
        train_seconds=run.train_seconds,
        stages=run.stages,
        method_config=method.config(),
        main_process=main,
    )


def _train_stage(run: _Run, stage, several: bool, last: bool, index: int, optimizer_state: dict | None) -> None:
    """One stage of the method's recipe (its own optimiser and warm-up), evaluated after every epoch (at the
    stage's own knob, whatever knobs the sandwich trained it at). `optimizer_state`: resuming inside this stage."""
    cfg, model, method, cursor = run.cfg, run.model, run.method, run.cursor
    method.soft = stage.soft
    stage_knob = method.dense_knob if stage.knob is None else stage.knob
    knob_range = cfg.knob_range if last else None
    set_knob(model, stage_knob)
    steps = (len(run.train) + cfg.batch_size - 1) // cfg.batch_size * stage.epochs
    optimizer, scheduler = _optimizer(model, method, stage, cfg, steps)
    optimizer = run.accelerator.prepare_optimizer(optimizer)  # fp16 loss scaling; the scheduler steps once per step
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])
    else:
        run.cursor = cursor = Cursor(stage=index)
    for epoch in range(cursor.epoch, stage.epochs + 1):
        cursor.epoch = epoch
        label = f"{stage.name} epoch {epoch}/{stage.epochs}" if several else f"epoch {epoch}/{stage.epochs}"
        loss = _train_epoch(run, stage, optimizer, scheduler, label, steps, knob_range)
        set_knob(model, stage_knob)
        epoch_seconds = cursor.epoch_seconds
        cursor.stage_seconds += epoch_seconds
        cursor.epoch_seconds, cursor.step, cursor.order, cursor.running_loss = 0.0, 0, [], 0.0
        run.done_epochs += 1
        final = run.done_epochs == run.total_epochs and not stage.soft
        metrics: dict = {}
        if not stage.align:  # an aligned model has no trained classifier yet: nothing to evaluate
            method.reset_metrics()
            method.collect_metrics = final  # the saved model's own figures (e.g. gate bi-modality), from this eval
            try:
                metrics = evaluate_across(run.accelerator, model, run.evaluation, run.info, run.pad_id,
                                          cfg.eval_batch_size)  # fmt: skip
            finally:
                method.collect_metrics = False
            metrics = {**metrics, **(method.metrics() if final else {})}
        run.history.append(
            {
                "stage": stage.name,
                "epoch": epoch,
                "train_loss": loss,
                "epoch_seconds": round(epoch_seconds, 2),
                **metrics,
            }
        )
        if run.progress:
            primary = run.info.primary_metric
            said = f"{primary} {metrics[primary]:.4f}" if primary in metrics else f"alignment mse {loss:.4f}"
            run.progress(f"{label} {said}", run.done_epochs, run.total_epochs)
    method.soft = False
    method.end_stage(stage)
    run.train_seconds += cursor.stage_seconds
    run.stages.append(
        {"name": stage.name, "epochs": stage.epochs, "seconds": round(cursor.stage_seconds, 2), **run.history[-1]}
    )
    run.cursor = Cursor(stage=index + 1)


def _optimizer(model, method, stage, cfg: TrainConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases and LayerNorm
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    own = list(method.parameters())
    for p in own:
        p.requires_grad_(stage.method_lr is not None)
    if stage.method_lr is not None and own:  # the method's parameters: their own lr, no decay (methods.md §3.3)
        groups.append({"params": own, "weight_decay": 0.0, "lr": stage.method_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate if stage.lr is None else stage.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def _train_epoch(
    run: _Run, stage, optimizer, scheduler, label: str, stage_steps: int, knob_range: tuple[float, float] | None
) -> float:
    """The rest of the cursor's epoch (all of it unless resuming); saves a resumable state every
    `save_every` steps, and on Ctrl-C saves one and raises TrainingInterrupted."""
    model, method, cfg, cursor, acc = run.model, run.method, run.cfg, run.cursor, run.accelerator
    last_layer = len(find_encoder(model).layer) - 1  # --distill-ranking teaches the layers before it
    # --distill-ranking: only a stage whose passes score tokens needs the teacher's scores (not PoWER's or LTP's
    # dense first stage, whose forward scores nothing: there the teacher's states and last layer would be waste)
    ranking_stage = cfg.distill_ranking > 0 and (stage.soft or stage.knob is not None or knob_range is not None)
    world, rank = acc.num_processes, acc.process_index
    run.ddp.train()
    if not cursor.order:
        cursor.order = torch.randperm(len(run.train), generator=run.generator).tolist()
    total = len(run.train)
    started = time.perf_counter()
    rest = cursor.order[cursor.step * cfg.batch_size :]
    for start in range(0, len(rest), cfg.batch_size):
        global_batch = rest[start : start + cfg.batch_size]  # the same ids on every process (same seed)
        method.stage_progress = scheduler.last_epoch / max(1, stage_steps)  # e.g. the gates' bi-modal ramp
        knobs = sandwich_knobs(knob_range, method.dense_knob, cfg.random_knobs, run.knob_rng) if knob_range else [None]
        mine = share(global_batch, rank, world)
        micros = [share(mine, j, cfg.grad_accum) for j in range(min(cfg.grad_accum, len(mine)))]
        # Each micro-batch's mean loss weighs len(micro) * N / len(global batch): after DDP's mean over the N
        # processes the step's gradient is the global batch's mean (tiltbench/distributed.py).
        weights = [len(micro) * world / len(global_batch) for micro in micros]
        if not micros:  # a last global batch smaller than N: still take part in the collective, with no weight
            micros, weights = [global_batch[:1]], [0.0]
        step_loss = 0.0  # mean over the passes of this step
        for j, (micro, weight) in enumerate(zip(micros, weights, strict=True)):
            batch = on_device(collate([run.train[i] for i in micro], run.pad_id), acc.device)
            target = None  # the logits taught towards: the teacher's, or in a sandwich without one the first pass's
            if stage.align:  # no labels, no elimination: hidden states taught towards the table model's
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                with torch.no_grad(), acc.autocast():
                    goal = run.align_teacher(**inputs, output_hidden_states=True).hidden_states
                with contextlib.nullcontext() if j == len(micros) - 1 else acc.no_sync(run.ddp):
                    states = run.ddp(**inputs, output_hidden_states=True).hidden_states
                    loss = _alignment_loss([x.float() for x in states], [x.float() for x in goal],
                                           batch["attention_mask"])  # fmt: skip
                    acc.backward(loss * weight)
                step_loss += loss.item() * weight / world
                continue
            hidden = cfg.distill_hidden > 0  # the teacher's hidden states too (validated: the teacher removes none)
            ranking = None  # [B,n] the teacher's final-layer scores, taught to the student's (--distill-ranking)
            if run.teachers:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                with torch.no_grad(), acc.autocast():
                    want_states = hidden or ranking_stage  # validated: one teacher then
                    outputs = [member(**inputs, output_hidden_states=want_states) for member in run.teachers]
                    target = run.distillation.target([out.logits for out in outputs], run.info.regression)
                    taught, outputs = outputs[0], None
                    if ranking_stage:
                        ranking = teacher_final_scores(
                            run.teachers[0], taught.hidden_states, batch["attention_mask"], method.score
                        )
                    if not hidden:  # the states were for the ranking only: not kept through every pass
                        taught = None
            for k, knob in enumerate(knobs):  # one pass, or a sandwich whose gradients add up
                synced = j == len(micros) - 1 and k == len(knobs) - 1  # DDP reduces once per step, at the end
                if knob is not None:
                    set_knob(model, knob)
                with contextlib.nullcontext() if synced else acc.no_sync(run.ddp):
                    # an eliminating pass records its kept word vectors itself (HF's collector needs one width)
                    eliminating = hidden and model._tiltbench.eliminating
                    model._tiltbench.record_states = eliminating  # for this pass only: evaluation records nothing
                    model._tiltbench.record_scores = ranking is not None
                    output = run.ddp(**batch, output_hidden_states=hidden and not eliminating)
                    model._tiltbench.record_states = model._tiltbench.record_scores = False
                    loss = output.loss.float()
                    if target is not None:
                        loss = run.distillation.loss(output.logits.float(), target, loss, run.info.regression)
                    else:  # the first pass of a sandwich without a teacher teaches the others (in-place distillation)
                        target = output.logits.detach().float() if knob is not None else None
                    if hidden:
                        if eliminating:
                            recorded = zip(model._tiltbench.states, model._tiltbench.valids, strict=True)
                            kept = [(x.float(), where, valid) for (x, where), valid in recorded]
                        else:
                            kept = [(x.float(), None, batch["attention_mask"]) for x in output.hidden_states]
                        loss = loss + cfg.distill_hidden * _kept_alignment_loss(
                            kept, [x.float() for x in taught.hidden_states]
                        )
                    if ranking is not None and model._tiltbench.scores:  # a pass that scored (removes tokens)
                        ranked = ranking_loss(model._tiltbench.scores, ranking, last_layer, cfg.ranking_top or 20)
                        if ranked is not None:
                            loss = loss + cfg.distill_ranking * ranked
                    model._tiltbench.scores = None  # the graph goes with the backward, not with the model
                    penalty = method.regulariser()  # every pass: it also forgets what the forward recorded for it
                    if penalty is not None and stage.regulariser_weight:
                        loss = loss + stage.regulariser_weight * penalty
                    acc.backward(loss * weight)
                step_loss += loss.item() * weight / world / len(knobs)
        if world > 1:  # the method's own parameters are outside DDP: average their gradients here
            for parameter in method.parameters():
                if parameter.grad is not None:
                    parameter.grad = acc.reduce(parameter.grad, "mean")
            step_loss = float(acc.reduce(torch.tensor(step_loss, device=acc.device), "sum"))
        if acc.scaler is not None:  # fp16: unscale this stage's optimiser only (accelerate's clip_grad_norm_ would
            acc.unscale_gradients(optimizer)  # unscale every optimiser it ever prepared, earlier stages' too)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step()
        first = cursor.step == 0
        cursor.running_loss = step_loss if first else 0.98 * cursor.running_loss + 0.02 * step_loss
        cursor.step += 1
        stop = run.stop["interrupted"]
        if world > 1:  # every process stops at the same step, whichever got the Ctrl-C
            stop = bool(acc.reduce(torch.tensor(int(stop), device=acc.device), "sum") > 0)
        if (cfg.save_every and cursor.step % cfg.save_every == 0) or stop:
            now = time.perf_counter()
            cursor.epoch_seconds += now - started
            started = now
            _save_state(run, optimizer, scheduler)
            if stop:
                raise TrainingInterrupted(
                    f"fine-tune stopped after {stage.name} epoch {cursor.epoch} step {cursor.step}; its state is in "
                    f"{run.resume_dir}: rerun the same command to resume"
                )
        seen = min(cursor.step * cfg.batch_size, total)
        if run.progress:  # one bar over every stage and epoch
            run.progress(f"{label} loss {cursor.running_loss:.4f}", run.done_epochs + seen / total, run.total_epochs)
    cursor.epoch_seconds += time.perf_counter() - started
    model.eval()
    return round(cursor.running_loss, 5)


def _save_state(run: _Run, optimizer, scheduler) -> None:
    state = {
        "cursor": asdict(run.cursor),
        "model": run.model.state_dict(),
        "method": run.method.state_dict(),
        "optimizer": {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        "random": random_states(run.knob_rng, run.generator),
        "history": run.history,
        "stages": run.stages,
        "done_epochs": run.done_epochs,
        "train_seconds": run.train_seconds,
    }
    try:
        if run.accelerator.is_main_process:
            save_state(run.resume_dir, run.cfg, state)
    finally:
        run.accelerator.wait_for_everyone()


def _restore(run: _Run, state: dict) -> None:
    """Back to where a saved state left off (the optimiser is restored by its stage)."""
    run.model.load_state_dict(state["model"])  # load_state_dict copies onto the parameters' own device
    run.method.load_state_dict(state["method"])
    restore_random_states(state["random"], run.knob_rng, run.generator)
    run.cursor = Cursor(**state["cursor"])
    run.history, run.stages = state["history"], state["stages"]
    run.done_epochs, run.train_seconds = state["done_epochs"], state["train_seconds"]


def _align_teacher(cfg: TrainConfig, info, student: torch.nn.Module) -> torch.nn.Module:  # noqa: ANN001 (TaskInfo)
    """--hash-align-epochs: --model as loaded, with its own table, frozen: the hidden states the hashed model learns."""
    from tiltbench.transforms.hashed import hashed_embedding

    teacher, _ = load_model(cfg.model, info)
    if hashed_embedding(teacher) is not None or not isinstance(teacher.get_input_embeddings(), torch.nn.Embedding):
        raise UserError(f"--hash-align-epochs needs --model with its word-embedding table; {cfg.model!r} has none")
    if not _same_shape(teacher, student):
        raise UserError(
            f"--hash-align-epochs teaches towards --model {cfg.model!r}, whose hidden size and layers differ from "
            f"--init {cfg.init!r}'s; pass the --model the --init checkpoint was trained from"
        )
    return teacher.eval().requires_grad_(False)


def _same_shape(teacher: torch.nn.Module, student: torch.nn.Module) -> bool:
    """Whether the two models' hidden states can be compared one to one: the same width and number of layers."""
    shape = ("hidden_size", "num_hidden_layers")
    return [getattr(teacher.config, k) for k in shape] == [getattr(student.config, k) for k in shape]


def _kept_alignment_loss(student: list[tuple], teacher_states: tuple) -> torch.Tensor:
    """--distill-hidden: the mean over the hidden states (embedding output, every layer) of the squared error
    between each word vector the student still has and the teacher's at the same input position, over the real
    tokens and hidden units. `student`: (states [B,w,h], positions [B,w] into the input or None for all of them in
    order, validity [B,w]) per state. With nothing removed this is `_alignment_loss`; under elimination a layer's
    kept vectors are compared with the teacher's vectors of those tokens (DynamicViT's token distillation, there
    for the last layer only, here for every layer as TinyBERT's term is)."""
    total = 0.0
    for (states, positions, valid), goal in zip(student, teacher_states, strict=True):
        if positions is not None:
            goal = goal.gather(1, positions[:, :, None].expand(-1, -1, goal.shape[-1]))
        real = valid[..., None].to(states.dtype)
        total = total + ((states - goal) ** 2 * real).sum() / (real.sum() * states.shape[-1])
    return total / len(student)


def _alignment_loss(student_states: tuple, teacher_states: tuple, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the two models' hidden states (embeddings output and every layer's), over the
    real tokens and hidden units, averaged over the layers: `_kept_alignment_loss` with every token present."""
    return _kept_alignment_loss([(states, None, mask) for states in student_states], teacher_states)


def _input_embeddings(model: torch.nn.Module, tokenizer, cfg: TrainConfig, train: list[dict]) -> dict | None:  # noqa: ANN001
    """--embeddings hashed: the table swapped for a hashed embedding fitted to it (or, from a hashed --init, the one
    it has); what tiltbench.json records of it. None: the model's own table."""
    from tiltbench.transforms.hashed import HashedConfig, hashed_embedding, replace_table

    own = hashed_embedding(model)
    if own is not None:
        if cfg.embeddings != "hashed":
            raise UserError(f"--init {cfg.init} has hashed input embeddings: pass --embeddings hashed")
        if own.config.dim != cfg.hash_dim:
            raise UserError(f"--init {cfg.init} hashes into {own.config.dim} features, not --hash-dim {cfg.hash_dim}")
        return {**own.describe(), "build_seconds": own.build_seconds, "init": cfg.init}
    if cfg.embeddings == "hashed":
        # how often each vocabulary id occurs in the training text ([CLS]/[SEP] included): the task fit's weights,
        # and with either fit the score of how well the rows the task uses are reproduced
        ids = torch.tensor([i for example in train for i in example["input_ids"]], dtype=torch.long)
        counts = torch.bincount(ids, minlength=model.config.vocab_size)[: model.config.vocab_size].float()
        return replace_table(model, tokenizer, HashedConfig(cfg.hash_dim), counts, weighted=cfg.hash_fit == "task")
    return None


def _save(out: Path, run: _Run, knob: float) -> None:
    model, cfg = run.model, run.cfg
    if run.embeddings is not None:  # no table to save: a plain HF load must not draw a random one (models.py)
        save_hashed(model, run.tokenizer, out)
    else:
        model.save_pretrained(out)
        run.tokenizer.save_pretrained(out)
    state = model._tiltbench
    method = state.method
    if list(method.parameters()):  # beside the HF weights, so the HF folder itself stays plain
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in method.state_dict().items()}, str(out / METHOD_WEIGHTS))
    write_meta(
        out,
        {
            "method": method.name,
            "method_config": method.config(),
            "knob_name": method.knob_name,
            "knob": knob,
            "scorer": method.scorer_name,
            "schedule": state.schedule.to_dict(),
            "train_schedule": state.schedule.to_dict(),
            "task": run.info.to_dict(),
            "max_seq_len": cfg.data.max_seq_len,
            "seed": cfg.data.seed,
            "stages": run.stages,
            "train_config": {**asdict(cfg), "n_train": len(run.train), "n_eval": len(run.evaluation)},
            "distributed": {
                "processes": run.accelerator.num_processes,
                "device": run.accelerator.device.type,
                "mixed_precision": cfg.mixed_precision,
                "grad_accum": cfg.grad_accum,
            },
            "environment": environment(model.config._attn_implementation, cfg.data.seed),
            **({"embeddings": run.embeddings} if run.embeddings is not None else {}),
        },
    )
    write_json_atomic(
        out / "metrics.json",
        {
            **run.history[-1],
            "train_seconds": round(run.train_seconds, 2),
            "history": run.history,
            "stages": run.stages,
        },
    )
