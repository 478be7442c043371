"""Shared pieces of the tiltbench command line: the typer app, option aliases, the UserError -> exit 2 edge,
library set-up, and the console entry point. The command modules register themselves on `app`.

A `UserError` becomes one line on stderr and exit status 2 (as click's usage errors); anything else is a bug
and keeps its traceback. TILTBENCH_DEBUG=1 shows tracebacks for user errors too.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from typing import Annotated

import typer

try:  # typer >= 0.29 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError
from typer import Abort

from tiltbench.console import err_console
from tiltbench.errors import TrainingInterrupted, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,  # main() answers a bare `tiltbench` with one error line naming the commands
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
ScorerOpt = Annotated[
    str | None, typer.Option(help="Importance score: acc, acc-nodiag or acc-norm (default: the method's own).")
]
KnobGridOpt = Annotated[
    str | None,
    typer.Option(
        "--tilt-rates",
        "--tilt-rate",
        "--knobs",
        "--knob",
        help="Values of the method's knob (tilt rate for tilted, retention scale for power, gate threshold for "
        "gates, threshold scale for ltp): start:stop:step (stop included) or a comma list. Default: the method's "
        "grid (tilted 0:0.5:0.1, power 0:1.5:0.25, gates 0,0.3,0.5,0.7,0.9, ltp 0,0.5,1,1.5,2).",
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        help="Elimination method: tilted (TiltedBERT), power (PoWER-BERT), gates (trainable gates, Dynamic BERT) "
        "or ltp (learned token pruning)."
    ),
]
QuantizeOpt = Annotated[
    str, typer.Option(help="none or int8: dynamic int8 Linear layers (CPU), applied after loading ([stack]).")
]
DtypeOpt = Annotated[str, typer.Option(help="fp32 or bf16: the model's weights and activations in bfloat16.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when a GPU is visible).")]
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
        except TrainingInterrupted as stop:  # Ctrl-C in finetune, state saved: say how to go on
            err_console.print(f"interrupted: {stop}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A warning the CLI lets through (tiltbench's own: a kernel that could not be built) as one stderr line,
    not Python's two lines of file, line number and source."""
    err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def setup(threads: int | None = None) -> None:
    """Quiet the libraries' own logging and bars; set torch threads."""
    import datasets
    import huggingface_hub
    import torch
    import transformers

    warnings.showwarning = _one_line_warning
    huggingface_hub.utils.logging.set_verbosity_error()  # no retry chatter when the Hub is unreachable
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


# measure / sweep options
TransformsOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma list of numerics to measure each checkpoint under, e.g. fp32,int8,bf16 (a grid axis; instead "
        "of --quantize/--dtype). Each transformed row is also timed against the same-transform dense model."
    ),
]
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
OptTaskOpt = Annotated[str | None, typer.Option(help="Task (default: the checkpoint's).")]
OptMaxLenOpt = Annotated[int | None, typer.Option(help="Truncate to this many tokens (default: the checkpoint's).")]


def main() -> None:
    """Console entry point: click usage errors are also printed as one line (exit 2)."""
    if len(sys.argv) <= 1:
        commands = ", ".join(c.name or c.callback.__name__ for c in app.registered_commands)
        err_console.print(
            f"error: no command given; choose one of {commands} (`tiltbench --help` says more)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    try:
        code = app(standalone_mode=False)
    except UsageError as err:
        err_console.print(f"error: {err.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Abort:
        err_console.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
