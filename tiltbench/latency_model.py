"""Calibrated latency model: predicts what `measure` will time, not only the FLOP ratio.

A FLOP ratio ignores what dominates short inputs and small batches: per-layer fixed costs (each Linear streams
its weights from memory whatever the token count), memory-bound softmax, and the scoring/gather work of
eliminating layers. The model is linear in six features of one batch's work, summed over its layers:

    time(batch) = a * linear MACs          sum_l B * (4 * m_in * h^2 + 2 * m_out * h * f)
                + b * quadratic MACs       sum_l 2 * h * A_l
                + c * tokens processed     sum_l B * m_in
                + e * eliminated probs     sum over eliminating layers of H * A_l (materialised softmax)
                + g * eliminating layers   count (top-k, gather, extra small ops)
                + j * large-batch tokens   sum_l max(0, B * m_in - T)
                + k                        per batch: L * (fixed per-layer cost d) + embeddings/pooler/Python

with m_in, m_out the batch's tensor widths (tokens, padding included) into and out of layer l, and A_l the
attention area per head: B * m_in^2 in a dense layer (HF's sdpa computes the padding), and in an eliminating
layer the sum over `eliminate.row_chunks` of rows * width^2 (it computes no padding beyond each chunk's
longest real row). With one model
L is fixed, so the per-layer constant d and the per-batch constant k are fitted as one constant (k' = L*d + k).
The large-batch term is measured, not derived: on the 2-core VM HF's dense layers cost more per token once a
layer's batch holds more than about 10,000 tokens (dense MiniLM at 512 tokens: 47-53 ms per row at batch 16,
68-75 ms at batch 32), probably because activations that large are page-faulted in afresh each forward. The
threshold T is machine-specific, so `calibrate` picks it from a grid by the fit's own RMS error, never by the
measurements it is checked against, and stores it in the profile.
Coefficients come from non-negative least squares on relative error, fitted from a short calibration run of
the real model on this machine (`tiltbench calibrate`), and are stored as a machine profile with its environment.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tiltbench.eliminate import row_chunks
from tiltbench.errors import UserError
from tiltbench.schedule import Schedule
from tiltbench.speedup import ModelDims

FEATURES = (
    "linear_macs",
    "quadratic_macs",
    "tokens",
    "eliminated_probs",
    "eliminating_layers",
    "large_batch_tokens",
    "constant",
)
UNITS = ("ms/MAC", "ms/MAC", "ms/token", "ms/probability", "ms/layer", "ms/token", "ms/batch")


@dataclass(frozen=True)
class BatchWork:
    """What one forward computes: tensor widths [W0..WL] and which layers eliminate, for `rows` examples."""

    rows: int
    widths: tuple[int, ...]
    eliminating: tuple[bool, ...]
    lengths: tuple[tuple[int, ...], ...] = ()  # real tokens of each row entering each layer (empty: dense)

    def attention_area(self, layer: int, heads: int) -> int:
        """Query x key positions per head that layer computes (see the module docstring)."""
        if not self.eliminating or not self.eliminating[layer]:
            width = self.widths[layer] if len(self.widths) > 1 else self.widths[0]
            return self.rows * width * width
        return sum((stop - start) * m * m for start, stop, m in row_chunks(self.lengths[layer], heads))


def batch_work(
    lengths: Sequence[int],
    schedule: Schedule | None,
    pad_to: int | None = None,
    counts: Sequence[Sequence[int]] | None = None,
) -> BatchWork:
    """The work of one batch of real `lengths`: dense when `schedule` and `counts` are None, else tiltbench's.

    `counts` ([B][L+1], e.g. what a data-dependent method realised) takes the place of the schedule's plan.
    Mirrors patch.py: a layer that drops no token in the batch keeps the (padded) width; an eliminating layer
    outputs the longest kept row."""
    width = pad_to or max(lengths)
    if counts is None:
        counts = [schedule.counts(n) for n in lengths] if schedule else []
    layers = len(counts[0]) - 1 if counts else 0
    widths, eliminating = [width], []
    for layer in range(1, layers + 1):
        drops = any(c[layer] != c[layer - 1] for c in counts)
        eliminating.append(drops)
        widths.append(max(c[layer] for c in counts) if drops else widths[-1])
    entering = tuple(tuple(c[layer] for c in counts) for layer in range(layers))
    return BatchWork(len(lengths), tuple(widths), tuple(eliminating), entering)


def features(work: BatchWork, dims: ModelDims, heads: int, large_batch: int | None = None) -> np.ndarray:
    """The features of one batch (see the module docstring); `large_batch` is T (None: no large-batch term)."""
    h, f, B = dims.hidden, dims.ffn, work.rows
    widths = work.widths if len(work.widths) > 1 else work.widths * (dims.layers + 1)  # dense: same width
    eliminating = work.eliminating or (False,) * dims.layers
    out = np.zeros(len(FEATURES))
    for layer in range(dims.layers):
        m_in, m_out = widths[layer], widths[layer + 1]
        out[0] += B * (4 * m_in * h * h + 2 * m_out * h * f)
        area = work.attention_area(layer, heads)
        out[1] += 2 * h * area
        out[2] += B * m_in
        if large_batch is not None:
            out[5] += max(0, B * m_in - large_batch)
        if eliminating[layer]:
            out[3] += heads * area
            out[4] += 1
    out[6] = 1.0
    return out


@dataclass(frozen=True)
class LatencyProfile:
    """Fitted coefficients for one model on one machine and thread count."""

    model: str
    hidden: int
    ffn: int
    layers: int
    heads: int
    threads: int
    coefficients: dict[str, float]  # feature -> ms per unit
    fit: dict  # samples, median/max absolute relative error of the fit, calibration seconds
    environment: dict
    # the calibration timings themselves, [batch lengths, tilt rate, ms] each, so a changed model can be refitted
    # (`refit`) without timing again
    timings: list = field(default_factory=list)
    large_batch: int | None = None  # T of the large-batch term, chosen by `calibrate`

    @property
    def dims(self) -> ModelDims:
        return ModelDims(self.hidden, self.ffn, self.layers)

    def batch_ms(self, work: BatchWork) -> float:
        x = features(work, self.dims, self.heads, self.large_batch)
        return float(x @ np.array([self.coefficients[f] for f in FEATURES]))

    def save(self, path: str | Path) -> None:
        from tiltbench.report import write_json_atomic

        write_json_atomic(path, {**asdict(self), "units": dict(zip(FEATURES, UNITS, strict=True))})

    @classmethod
    def load(cls, path: str | Path, allow_old: bool = False) -> LatencyProfile:
        """Read a profile; one fitted by an older model is refused unless `allow_old` (to call `refitted`)."""
        file = Path(path)
        if not file.is_file():
            raise UserError(f"profile {str(file)!r} does not exist; make one with `tiltbench calibrate`")
        try:
            data = json.loads(file.read_text())
            data.pop("units", None)
            profile = cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise UserError(f"{file} is not a tiltbench latency profile ({err})") from None
        if not allow_old and set(profile.coefficients) != set(FEATURES):
            raise UserError(f"{file} was fitted by an older tiltbench latency model; run `tiltbench calibrate` again")
        return profile

    def refitted(self) -> LatencyProfile:
        """The same calibration timings fitted again by this version's model (no timing needed)."""
        if not self.timings:
            raise UserError("this profile holds no calibration timings; run `tiltbench calibrate` again")
        works = [batch_work(n, Schedule(self.layers, rate) if rate else None) for n, rate, _ in self.timings]
        times = [ms for *_, ms in self.timings]
        max_tokens = max(sum(lengths) for lengths, _, _ in self.timings)
        coefficients, fitted, large_batch = fit_profile_coefficients(works, times, self.dims, self.heads, max_tokens)
        return replace(
            self, coefficients=coefficients, fit={**self.fit, **fit_summary(fitted, times)}, large_batch=large_batch
        )

    def check_dims(self, dims: ModelDims, heads: int) -> None:
        if (dims, heads) != (self.dims, self.heads):
            raise UserError(
                f"the profile was fitted on {self.model} (h {self.hidden}, f {self.ffn}, L {self.layers}, "
                f"{self.heads} heads), not on this model; calibrate this model first"
            )


def fit_coefficients(rows: np.ndarray, times_ms: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Non-negative least squares on relative error: each sample's row and target divided by its time."""
    from scipy.optimize import nnls

    scale = rows.max(axis=0)
    scale[scale == 0] = 1.0
    weighted = rows / scale / times_ms[:, None]
    solution, _ = nnls(weighted, np.ones_like(times_ms))
    coefficients = solution / scale
    return dict(zip(FEATURES, (float(c) for c in coefficients), strict=True)), rows @ coefficients


def fit_summary(fitted_ms: Sequence[float], times_ms: Sequence[float]) -> dict:
    errors = np.abs(np.asarray(fitted_ms) / np.asarray(times_ms) - 1)
    return {
        "samples": len(errors),
        "median_abs_rel_error": float(np.median(errors)),
        "rms_rel_error": float(np.sqrt(np.mean(errors**2))),
        "max_abs_rel_error": float(errors.max()),
    }


def fit_profile_coefficients(
    works: Sequence[BatchWork], times_ms: Sequence[float], dims: ModelDims, heads: int, max_tokens: int
) -> tuple[dict[str, float], np.ndarray, int | None]:
    """Fit the coefficients for each large-batch threshold T on a grid (and without the term), keep the fit with
    the smallest root-mean-square relative error: (coefficients, fitted ms, T). RMS, not the median: the term
    exists for the few largest batches, which a median never sees."""
    times = np.asarray(times_ms)
    best = None
    for threshold in [None, *range(2048, max_tokens, 2048)]:
        rows = np.array([features(w, dims, heads, threshold) for w in works])
        coefficients, fitted = fit_coefficients(rows, times)
        error = float(np.sqrt(np.mean((fitted / times - 1) ** 2)))
        if best is None or error < best[0] - 1e-4:  # a threshold must earn its place
            best = (error, coefficients, fitted, threshold)
    return best[1], best[2], best[3]


def batches_of(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Dataset order, as `measure` batches its inputs."""
    return [list(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)]


def predict_latency(
    profile: LatencyProfile,
    lengths: Sequence[int],
    batch_size: int,
    schedule: Schedule | None,
    pad_to: int | None = None,
    counts: Sequence[Sequence[int]] | None = None,
) -> tuple[float, float]:
    """(dense-dynamic ms, tiltbench ms) summed over the batches of `lengths` in dataset order; tiltbench's work
    from per-example per-layer `counts` ([N][L+1], realised) when given, else from `schedule`'s plan."""
    dense = tilted = 0.0
    for start in range(0, len(lengths), batch_size):
        batch = list(lengths[start : start + batch_size])
        dense += profile.batch_ms(batch_work(batch, None))
        if counts is not None:
            work = batch_work(batch, None, pad_to, counts[start : start + batch_size])
        else:
            work = batch_work(batch, None if schedule is None or schedule.is_identity else schedule, pad_to)
        tilted += profile.batch_ms(work)
    return dense, tilted


def calibrated_speedup(
    profile: LatencyProfile,
    lengths: Sequence[int],
    batch_size: int,
    schedule: Schedule | None,
    counts: Sequence[Sequence[int]] | None = None,
) -> float:
    """Calibrated dense-dynamic / tiltbench latency; from realised per-example `counts` when given."""
    dense, tilted = predict_latency(profile, lengths, batch_size, schedule, counts=counts)
    return dense / tilted


def tilt_rate_for_calibrated_speedup(
    profile: LatencyProfile,
    target: float,
    lengths: Sequence[int],
    batch_size: int,
    shape: str = "geometric",
    min_tokens: int = 1,
) -> float:
    """Smallest tilt rate (to 1e-3) whose calibrated speedup reaches `target`; UserError if none does."""

    def speedup(rate: float) -> float:
        return calibrated_speedup(profile, lengths, batch_size, Schedule(profile.layers, rate, shape, None, min_tokens))

    grid = [i / 100 for i in range(100)]
    reaching = next((r for r in grid if speedup(r) >= target), None)
    if reaching is None:
        best = max(speedup(r) for r in grid[::10])
        raise UserError(
            f"target speedup {target:g}x is out of reach on this machine: the calibrated model "
            f"predicts at most about {best:.2f}x at batch size {batch_size}"
        )
    lo, hi = max(0.0, reaching - 0.01), reaching  # refine between the last miss and the first hit
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if speedup(mid) >= target else (mid, hi)
    return round(hi, 3)
