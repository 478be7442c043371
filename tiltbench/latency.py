"""Latency statistics and the interleaved timer.

Every variant (the eliminating model and the dense baselines) runs the same batches in the same rounds,
batch by batch, in carryover-balanced orders, so machine noise and each run's aftermath hit all alike;
warm-up is discarded; timing stops only when every variant has a minimum number of samples and of seconds,
over at least `min_rounds` full rounds.
CPU: time.perf_counter around a synchronous forward; CUDA: events, with a synchronize.

References: optimum-benchmark `latency.py` (warm-up, min iterations + min duration, percentiles).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Latency:
    """Per-batch wall time of one variant, with the raw samples."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    stdev: float
    cv: float  # coefficient of variation = stdev / mean
    total: float
    unit: Literal["ms"] = "ms"
    samples: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_values(cls, samples_ms: Sequence[float]) -> Latency:
        # To the microsecond, here and not only when written, so that every statistic and speedup is computed from
        # the samples a report holds. Finer digits of a forward of 0.1 ms or more are timer noise, and they add up:
        # a 45-row sweep's report.json was 2.4 MB at 7 significant digits, 1.9 MB at microseconds.
        samples_ms = [round(x, 3) for x in samples_ms]
        values = sorted(samples_ms)
        mean = statistics.fmean(values)
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(
            len(values),
            mean,
            _percentile(values, 50),
            _percentile(values, 90),
            _percentile(values, 99),
            stdev,
            stdev / mean if mean else 0.0,
            sum(values),
            "ms",
            list(samples_ms),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(sorted_values) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def time_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Milliseconds of one forward pass, synchronised on CUDA."""
    if batch["input_ids"].is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(**batch)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    began = time.perf_counter()
    model(**batch)
    return (time.perf_counter() - began) * 1000


@dataclass
class Variant:
    """One thing to time: a model and the batches it gets (the same examples for every variant)."""

    name: str
    model: torch.nn.Module
    batches: list[dict[str, torch.Tensor]]
    before: Callable[[], None] | None = None  # e.g. set the schedule of a shared patched model
    after_each: Callable[[], None] | None = None  # e.g. collect realised counts
    # False for a probe timed alongside the models (the embedding layer alone): it gets every round the others
    # get, but its samples do not decide when timing stops; a 0.1 ms probe held to min_seconds would stretch a
    # batch-1 IMDB row from 6 rounds to 130
    paces: bool = True


def robust_total(latency: Latency, n_batches: int) -> float:
    """Sum over batches of each batch's median over rounds (ms): content-weighted like a total, but one
    outlier (a page fault, another process) in a batch's rounds does not move it. Samples are round-major."""
    rounds = latency.count // n_batches
    return sum(statistics.median(latency.samples[r * n_batches + i] for r in range(rounds)) for i in range(n_batches))


def time_interleaved(
    variants: Sequence[Variant],
    *,
    warmup: int,
    min_iterations: int,
    min_seconds: float,
    min_rounds: int = 3,
    progress: Progress | None = None,
) -> dict[str, Latency]:
    """Per-batch latencies of each variant, measured in interleaved rounds over the same batches."""
    n_batches = len(variants[0].batches)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    with torch.inference_mode():
        for variant in variants:  # warm-up: allocator, thread pool, caches; discarded
            _prepare(variant)
            for i in range(min(warmup, n_batches)):
                variant.model(**variant.batches[i])
        # Every row of a Williams design: for every batch, over len(orders) rounds each variant takes each position
        # equally often and directly follows each other variant equally often. An odd count needs all 2n rows:
        # its first n alone are cyclic (with 3 variants the same one would always run right before tiltbench).
        orders = williams_orders(len(variants))
        min_rounds = -(-min_rounds // len(orders)) * len(orders)  # a whole number of designs
        pacing = [samples[v.name] for v in variants if v.paces]
        rounds = 0
        while (
            rounds < min_rounds
            or rounds % len(orders)
            or not all(len(s) >= min_iterations and sum(s) >= 1000 * min_seconds for s in pacing)
        ):
            for i in range(n_batches):
                for k in orders[(rounds + i) % len(orders)]:
                    variant = variants[k]
                    _prepare(variant)
                    samples[variant.name].append(time_forward(variant.model, variant.batches[i]))
                    if variant.after_each:
                        variant.after_each()
            rounds += 1
            if progress:
                done = min(min((len(s) for s in pacing), default=min_iterations) / max(min_iterations, 1), 1.0)
                progress("timing", round(100 * done), 100)
    return {name: Latency.from_values(values) for name, values in samples.items()}


def williams_orders(n: int) -> list[list[int]]:
    """Run orders in which every variant directly follows every other equally often (a Williams design).

    A fixed cyclic order (even rotated) makes one variant always run right after the same other one; after a
    heavy variant (eager attention allocating 400 MB tensors) that costs its successor ~10 % and biased
    speedups. Williams, E. J. (1949), Aust. J. Sci. Res. A 2(2): 149-168."""
    first = [0]
    for j in range(1, n):
        first.append((j + 1) // 2 if j % 2 else n - j // 2)
    rows = [[(x + k) % n for x in first] for k in range(n)]
    return rows if n % 2 == 0 or n == 1 else rows + [row[::-1] for row in rows]


def _prepare(variant: Variant) -> None:
    if variant.before:
        variant.before()
