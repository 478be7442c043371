"""forecast(...): the speedup of a tilt rate before anyone trains, or the rate for a target speedup.

Without a machine profile: the FLOP ratio (speedup.py), each example at its real length. With a profile
(calibrate.py): the calibrated latency model (latency_model.py) over the batches the user will run, so batch
size, padding and per-layer overheads count. Lengths come from one `seq_len` or a task's real dev set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tiltbench.data import DataConfig, encode, load_split
from tiltbench.errors import UserError
from tiltbench.latency_model import (
    LatencyProfile,
    batches_of,
    calibrated_speedup,
    predict_latency,
    tilt_rate_for_calibrated_speedup,
)
from tiltbench.schedule import Schedule, Shape
from tiltbench.speedup import ModelDims, predict_speedup, tilt_rate_for_speedup

if TYPE_CHECKING:  # the methods import torch; a prediction from sizes alone does not need it
    from tiltbench.methods import Method


def task_lengths(data: DataConfig, model: str) -> list[int]:
    """Real token lengths (after truncation) of a task's evaluation examples, in dataset order."""
    from transformers import AutoTokenizer

    from tiltbench.models import resolve_model

    dataset, _ = load_split(data, "eval")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    return [len(e["input_ids"]) for e in encode(dataset, tokenizer, data.max_seq_len)]


def forecast(
    dims: ModelDims,
    lengths: Sequence[int],
    batch_size: int,
    *,
    tilt_rate: float | None = None,
    target_speedup: float | None = None,
    shape: Shape = "geometric",
    min_tokens: int = 1,
    profile: LatencyProfile | None = None,
    method: Method | None = None,
) -> dict:
    """Prediction as a dict: FLOP fields always; latency (ms per batch) and calibrated speedup with a profile.

    With `method` (e.g. a checkpoint's, learned fractions included) `tilt_rate` is that method's knob value, and
    `target_speedup` is solved along its knob; without, the knob is TiltedBERT's Tilt-Rate of `shape`."""
    if profile is not None:
        profile.check_dims(dims, profile.heads)
    if method is not None:
        knob = _solve_knob(method, dims, lengths, batch_size, target_speedup, profile) if target_speedup else tilt_rate
        schedule = method.schedule(float(knob or 0.0))
        tilt_rate = knob
    else:
        if target_speedup is not None:
            tilt_rate = (
                tilt_rate_for_calibrated_speedup(profile, target_speedup, lengths, batch_size, shape, min_tokens)
                if profile
                else tilt_rate_for_speedup(dims, target_speedup, lengths, shape=shape, min_tokens=min_tokens)
            )
        schedule = Schedule(dims.layers, float(tilt_rate or 0.0), shape, None, min_tokens)
    flop = predict_speedup(dims, schedule, lengths)
    out = {
        **flop.to_dict(),
        "method": method.name if method else "tilted",
        "knob_name": method.knob_name if method else "tilt_rate",
        "knob": float(tilt_rate or 0.0),
        "batch_size": batch_size,
        "n_examples": len(lengths),
        "prediction": "FLOP",
        "flop_speedup": flop.predicted_speedup,
    }
    if profile is not None:
        dense_ms, tilted_ms = predict_latency(profile, lengths, batch_size, schedule)
        n_batches = len(batches_of(lengths, batch_size))
        out.update(
            prediction="calibrated",
            predicted_speedup=dense_ms / tilted_ms,
            latency_ms_dense_dynamic=dense_ms / n_batches,
            latency_ms=tilted_ms / n_batches,
            latency_unit="ms per batch",
            profile_threads=profile.threads,
        )
    return out


def _solve_knob(
    method: Method,
    dims: ModelDims,
    lengths: Sequence[int],
    batch_size: int,
    target: float,
    profile: LatencyProfile | None,
) -> float:
    """Smallest knob value (to 1e-3 of its range) whose predicted speedup reaches `target`, by bisection: every
    method's knob removes more tokens as it grows."""
    if target <= 0:
        raise UserError(f"target speedup must be positive, got {target}")

    def speedup(knob: float) -> float:
        schedule = method.schedule(knob)
        if profile is not None:
            return calibrated_speedup(profile, lengths, batch_size, schedule)
        return predict_speedup(dims, schedule, lengths).predicted_speedup

    lo, hi = method.knob_range()
    if speedup(lo) >= target:
        return lo
    if speedup(hi) < target:
        raise UserError(
            f"target speedup {target:g}x is out of reach along {method.name}'s {method.knob_name.replace('_', ' ')} "
            f"(at most {speedup(hi):.2f}x at {hi:g})"
        )
    while hi - lo > 1e-3 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if speedup(mid) >= target else (mid, hi)
    return round(hi, 4)
