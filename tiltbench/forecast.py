"""forecast(...): the speedup of a tilt rate before anyone trains, or the rate for a target speedup.

Without a machine profile: the FLOP ratio (speedup.py), each example at its real length. With a profile
(calibrate.py): the calibrated latency model (latency_model.py) over the batches the user will run, so batch
size, padding and per-layer overheads count. Lengths come from one `seq_len` or a task's real dev set.
"""

from __future__ import annotations

from collections.abc import Sequence

from tiltbench.data import DataConfig, encode, load_split
from tiltbench.latency_model import LatencyProfile, batches_of, predict_latency, tilt_rate_for_calibrated_speedup
from tiltbench.schedule import Schedule, Shape
from tiltbench.speedup import ModelDims, predict_speedup, tilt_rate_for_speedup


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
) -> dict:
    """Prediction as a dict: FLOP fields always; latency (ms per batch) and calibrated speedup with a profile."""
    if profile is not None:
        profile.check_dims(dims, profile.heads)
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
