"""Training on more than one process or on a GPU, through Hugging Face `accelerate` (not a home-made engine).

`finetune` builds one `Accelerator` (`make_accelerator`) and uses it for device placement, DDP, mixed precision
(`--mixed-precision bf16|fp16`) and the gradient scaling fp16 needs. The same command runs plain (one process) or
under `accelerate launch --num_processes N` with no change of flags.

How a step is split (our interpretation, chosen so N processes train the same model as one):
- `--batch-size` is the *global* batch. Every process draws the same shuffled order (same seed) and takes its
  contiguous share of each global batch (`share`); `--grad-accum K` cuts that share into K micro-batches.
- Each micro-batch's mean loss is weighted by  len(micro) * N / len(global batch). DDP averages gradients over
  the N processes, so the step's gradient is the mean over the global batch, exactly as one process computes it
  (up to float summation order, and dropout masks, which are drawn per process).
- Only the last backward of a step synchronises (`no_sync` before it). A process whose share is empty (a last
  global batch smaller than N) still takes part with one zero-weighted pass, so the collective never hangs.
- The method's own parameters (gates, thresholds, retention) live beside the HF model, outside DDP: their
  gradients are averaged with one all-reduce per step.
- Evaluation: every process runs a contiguous share of the evaluation set; the outputs are gathered in order and
  every process computes the metric on all examples once (none duplicated, none dropped).
- The checkpoint and resumable states are written by the main process only; progress comes from it alone.
- A method's own evaluation figures (the gates' bi-modality share) describe the main process's share of the
  evaluation set; the task metric is over all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from tiltbench.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
MIXED_PRECISION = ("no", "bf16", "fp16")
T = TypeVar("T")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; UserError for 'cuda' without one."""
    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch here (use --device cpu or auto)")
    return device


def check_mixed_precision(mixed_precision: str, device: str) -> None:
    if mixed_precision not in MIXED_PRECISION:
        raise UserError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    if mixed_precision == "fp16" and resolve_device(device) != "cuda":
        raise UserError("--mixed-precision fp16 needs a CUDA GPU (its loss scaling is CUDA-only); use bf16 on CPU")


def make_accelerator(device: str = "auto", mixed_precision: str = "no"):  # noqa: ANN201 (accelerate.Accelerator)
    """The run's Accelerator: one process unless started by `accelerate launch` (or torchrun)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    check_mixed_precision(mixed_precision, device)
    # accelerate keeps one process-wide state and refuses a second Accelerator with other settings; a library call
    # (a benchmark training several models in one process) may change them. The process group (PartialState)
    # stays as it is.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=resolve_device(device) == "cpu", mixed_precision=mixed_precision)


def share(items: Sequence[T], index: int, count: int) -> list[T]:
    """The index-th of `count` contiguous, nearly equal parts of `items` (numpy.array_split's sizes)."""
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return list(items[start : start + size + (index < extra)])


def on_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if all(t.device == device for t in batch.values()):
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate_across(accelerator, model, examples: list[dict], info, pad_id: int, batch_size: int) -> dict[str, float]:  # noqa: ANN001
    """The task metrics on all `examples`, each evaluated by exactly one process (see the module notes)."""
    from tiltbench.inference import evaluate, run
    from tiltbench.metrics import compute_metrics

    count = accelerator.num_processes if accelerator is not None else 1
    if count == 1:
        metrics, _ = evaluate(model, examples, info, pad_id, batch_size)
        return metrics
    from accelerate.utils import gather_object

    mine = share(examples, accelerator.process_index, count)
    logits = run(model, mine, pad_id, batch_size).logits if mine else None
    parts = [part for part in gather_object([logits]) if part is not None]  # in process order
    labels = np.array([e["label"] for e in examples])
    return compute_metrics(info, np.concatenate(parts), labels)
