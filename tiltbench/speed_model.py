"""Speed models: what a knob value buys before anything is timed, and what `measure` should then time.

Three parts, one idea (predicted speedup against the dense model):
1. The analytic FLOP model: encoder MACs of per-example counts; the ratio papers quote.
2. The calibrated latency model: a linear model of one batch's time, fitted on this machine (calibrate.py).
3. `forecast`: the speedup of a knob value before anyone trains, or the knob value for a target speedup,
   from either model (speedup-predict).

## 1. Analytic FLOP model

Layer l runs attention on m = n_{l-1} tokens and its FFN on n_l tokens (our placement, see patch.py):

    MACs_l = 4*m*h^2 (Q, K, V, output projections) + 2*m^2*h (QK^T and AV) + 2*n_l*h*f (two FFN Linears)

FLOPs = 2 x MACs (fvcore counts one multiply-add as one flop, i.e. it reports MACs). Embeddings, pooler,
classifier, softmax, LayerNorm and the scoring/gather overhead are left out. For a dataset, each example is
counted at its own real length, and speedup = sum of dense MACs / sum of MACs with the schedule. This is the
per-example ratio papers quote. At batch > 1 the dense-dynamic baseline also computes its batch's padding
while tiltbench's eliminating layers compute none in attention (eliminate.row_chunks), so measured speedups
there can exceed this ratio; the calibrated model (below) counts the padding.

References: ../shared/methods.md §9.1 (derivation, reference implementation), nanoGPT `estimate_mfu`.

## 2. Calibrated latency model

It predicts what `measure` will time, not only the FLOP ratio.

A FLOP ratio ignores what dominates short inputs and small batches: per-layer fixed costs (each Linear streams
its weights from memory whatever the token count), memory-bound softmax, and the scoring/gather work of
eliminating layers. The model is linear in seven features of one batch's work, summed over its layers:

    time(batch) = a * linear MACs          sum_l B * (4 * m_in * h^2 + 2 * m_out * h * f)
                + b * quadratic MACs       sum_l 2 * h * A_l
                + c * tokens processed     sum_l B * m_in
                + e * eliminated probs     sum over eliminating layers of H * A_l (materialised softmax)
                + g * eliminating layers   count (top-k, gather, extra small ops)
                + r * ragged elim. layers  count of those on the general path (below)
                + j * large-batch tokens   sum_l max(0, B * m_in - T)
                + k                        per batch: L * (fixed per-layer cost d) + embeddings/pooler/Python

with m_in, m_out the batch's tensor widths (tokens, padding included) into and out of layer l (in a forward that
eliminates, B * m is the batch's real tokens instead wherever patch.py runs a Linear on the real slots alone: the
FFN of every layer, and the attention's projections in layers with tiltbench's own attention), and A_l the
attention area per head: B * m_in^2 in a dense layer (HF's sdpa computes the padding), and in an eliminating
layer the sum over `eliminate.row_chunks` of rows * width^2 (it computes no padding beyond each chunk's
longest real row). A method that decides before attention (gates) runs HF's attention in its eliminating
layers too: its area is B * m_in^2 and it materialises no probabilities (e = 0 there), but it pays g.
An eliminating layer whose batch has no padding, one attention chunk and a planned count (always so at batch 1)
takes patch.py's short path (no masks, no zeroed buffers, `top_tokens`); any other pays the general path's dozens
of extra small kernels on top, r per layer: one per-layer constant cannot fit both (it left batch 1 predicted
15-25 % slow once the short path existed). Since the fused attention kernel (tiltbench/fused.py), a layer whose
batch has no padding computes its probabilities in cache and never writes them out; the model still charges them
to e, so one coefficient averages the fused cost (batch 1) and the materialised one (padded batches). A profile
fitted before the kernel over-predicts batch 1: calibrate again. With one
model
L is fixed, so the per-layer constant d and the per-batch constant k are fitted as one constant (k' = L*d + k).
The large-batch term is measured, not derived: on the 2-core VM HF's dense layers cost more per token once a
layer's batch holds more than about 10,000 tokens (dense MiniLM at 512 tokens: 47-53 ms per row at batch 16,
68-75 ms at batch 32), probably because activations that large are page-faulted in afresh each forward. The
threshold T is machine-specific, so `calibrate` picks it from a grid by the fit's own RMS error, never by the
measurements it is checked against, and stores it in the profile.
Coefficients come from non-negative least squares on relative error, fitted from a short calibration run of
the real model on this machine (`tiltbench calibrate`), and are stored as a machine profile with its environment.

## 3. forecast

The speedup of a knob value before anyone trains, or the knob value for a target speedup. Without a machine
profile: the FLOP ratio (part 1), each example at its real length. With a profile (calibrate.py): the
calibrated latency model (part 2) over the batches the user will run, so batch size, padding and per-layer
overheads count. Lengths come from one `seq_len` or a task's real dev set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tiltbench.eliminate import row_chunks
from tiltbench.errors import UserError
from tiltbench.schedule import Schedule, Shape

if TYPE_CHECKING:  # the methods import torch and the data module imports datasets; sizes alone need neither
    from tiltbench.data import DataConfig
    from tiltbench.methods import Method


@dataclass(frozen=True)
class ModelDims:
    hidden: int
    ffn: int
    layers: int

    def __post_init__(self) -> None:
        if min(self.hidden, self.ffn, self.layers) < 1:
            raise UserError(f"hidden, ffn and layers must be positive, got {self.hidden}, {self.ffn}, {self.layers}")

    @classmethod
    def from_config(cls, config) -> ModelDims:
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers)


def layer_macs(n_in: int, n_out: int, dims: ModelDims) -> int:
    """MACs of one layer: attention on n_in tokens, FFN on n_out tokens."""
    h, f = dims.hidden, dims.ffn
    return 4 * n_in * h * h + 2 * n_in * n_in * h + 2 * n_out * h * f


def encoder_macs(counts: Sequence[int], dims: ModelDims) -> int:
    """MACs of the encoder for one example with per-layer counts [n0, n1, ..., nL]."""
    return sum(layer_macs(counts[i], counts[i + 1], dims) for i in range(len(counts) - 1))


@dataclass(frozen=True)
class SpeedupPrediction:
    hidden: int
    ffn: int
    layers: int
    seq_len: float  # the length, or the mean real length over a dataset
    tilt_rate: float
    kept_tokens: list[float]  # [n1..nL], mean over examples
    macs_dense: int  # encoder MACs, summed over examples (FLOPs = 2 x MACs)
    macs: int
    predicted_speedup: float
    unit: str = "MAC"

    def to_dict(self) -> dict:
        return asdict(self)


def speedup_from_counts(dims: ModelDims, counts: Sequence[Sequence[int]]) -> float:
    """FLOP-ratio speedup from per-example per-layer counts [N][L+1] (what a method planned or realised):
    dense encoder MACs at each example's n0 / MACs at its counts."""
    if not counts:
        raise UserError("no examples to predict a speedup for")
    dense = sum(encoder_macs([int(c[0])] * (dims.layers + 1), dims) for c in counts)
    return dense / sum(encoder_macs([int(n) for n in c], dims) for c in counts)


def predict_speedup(dims: ModelDims, schedule: Schedule, seq_lens: Sequence[int]) -> SpeedupPrediction:
    """FLOP-ratio speedup of `schedule` over the dense model on examples of real lengths `seq_lens`."""
    histogram = Counter(int(n) for n in seq_lens)
    if not histogram or min(histogram) < 1:
        raise UserError("sequence lengths must be positive integers")
    total = sum(histogram.values())
    dense = macs = 0
    kept = [0.0] * dims.layers
    for n0, count in histogram.items():
        counts = schedule.counts(n0)
        dense += count * encoder_macs([n0] * (dims.layers + 1), dims)
        macs += count * encoder_macs(counts, dims)
        for i, n in enumerate(counts[1:]):
            kept[i] += count * n / total
    mean_len = sum(n * c for n, c in histogram.items()) / total
    mean_len = int(mean_len) if len(histogram) == 1 else round(mean_len, 3)
    kept_out: list[float] = [int(k) if len(histogram) == 1 else round(k, 3) for k in kept]
    return SpeedupPrediction(
        dims.hidden, dims.ffn, dims.layers, mean_len, schedule.tilt_rate, kept_out, dense, macs, dense / macs
    )


def tilt_rate_for_speedup(
    dims: ModelDims, target: float, seq_lens: Sequence[int], *, shape: Shape = "geometric", min_tokens: int = 1
) -> float:
    """Smallest tilt rate (to 1e-4) whose predicted speedup reaches `target`; UserError if none does."""
    if target <= 0:
        raise UserError(f"target speedup must be positive, got {target}")

    def speedup(step: int) -> float:
        schedule = Schedule(dims.layers, step / 10_000, shape, None, min_tokens)
        return predict_speedup(dims, schedule, seq_lens).predicted_speedup

    lo, hi = 0, 9_999  # speedup is non-decreasing in the rate: bisect on the 1e-4 grid
    if speedup(lo) >= target:
        return 0.0
    best = speedup(hi)
    if best < target:
        raise UserError(
            f"target speedup {target:g}x is out of reach: at most {best:.2f}x with this model, "
            f"length and --min-tokens {min_tokens}"
        )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if speedup(mid) >= target else (mid, hi)
    return hi / 10_000


# ------------------------------ 2. Calibrated latency model -----------------------------------------------------

# "computed_linear_macs" (was "linear_macs"): since patch.py runs the Linears of an eliminating forward on the real
# tokens alone, the feature counts those; a profile fitted before then has the old name and is refused.
FEATURES = (
    "computed_linear_macs",
    "quadratic_macs",
    "tokens",
    "eliminated_probs",
    "eliminating_layers",
    "large_batch_tokens",
    "constant",
    "ragged_eliminating_layers",
)
UNITS = ("ms/MAC", "ms/MAC", "ms/token", "ms/probability", "ms/layer", "ms/token", "ms/batch", "ms/layer")


@dataclass(frozen=True)
class BatchWork:
    """What one forward computes: tensor widths [W0..WL] and which layers eliminate, for `rows` examples."""

    rows: int
    widths: tuple[int, ...]
    eliminating: tuple[bool, ...]
    lengths: tuple[tuple[int, ...], ...] = ()  # real tokens of each row entering each layer, then out (empty: dense)
    explicit_attention: bool = True  # eliminating layers materialise probabilities (False: HF's attention, gates)
    planned: bool = True  # counts from a plan (patch.py's short path is open to it), not decided by the content

    def short_path(self, layer: int, heads: int) -> bool:
        """True when that eliminating layer takes patch.py's short path: a planned count, every row entering it
        real (no padding) and one attention chunk."""
        entering = self.lengths[layer]
        width = self.widths[layer] if len(self.widths) > 1 else self.widths[0]
        return self.planned and min(entering) == width and len(row_chunks(entering, heads)) == 1

    def explicit(self, layer: int) -> bool:
        """True when `layer` runs tiltbench's own attention (probabilities materialised, no padding computed)."""
        return bool(self.eliminating) and self.eliminating[layer] and self.explicit_attention

    def attention_area(self, layer: int, heads: int) -> int:
        """Query x key positions per head that layer computes (see the module docstring)."""
        if not self.explicit(layer):
            width = self.widths[layer] if len(self.widths) > 1 else self.widths[0]
            return self.rows * width * width
        return sum((stop - start) * m * m for start, stop, m in row_chunks(self.lengths[layer], heads))


def batch_work(
    lengths: Sequence[int],
    schedule: Schedule | None,
    pad_to: int | None = None,
    counts: Sequence[Sequence[int]] | None = None,
    explicit_attention: bool = True,
    always_eliminating: Sequence[bool] | None = None,
    planned: bool = True,
) -> BatchWork:
    """The work of one batch of real `lengths`: dense when `schedule` and `counts` are None, else tiltbench's.

    `counts` ([B][L+1], e.g. what a data-dependent method realised) takes the place of the schedule's plan.
    Mirrors patch.py: a layer that drops no token in the batch keeps the (padded) width; an eliminating layer
    outputs the longest kept row. `explicit_attention=False` (a method that decides before attention, gates):
    its eliminating layers run HF's attention over the padded width and materialise no probabilities.
    `always_eliminating` marks layers that take the eliminating path even when nobody drops a token there (LTP
    scores every layer from 1 on with its own attention before it knows whether anything leaves)."""
    width = pad_to or max(lengths)
    if counts is None:
        counts = [schedule.counts(n) for n in lengths] if schedule else []
    layers = len(counts[0]) - 1 if counts else 0
    widths, eliminating = [width], []
    for layer in range(1, layers + 1):
        drops = any(c[layer] != c[layer - 1] for c in counts)
        eliminating.append(drops or bool(always_eliminating and always_eliminating[layer - 1]))
        widths.append(max(c[layer] for c in counts) if drops else widths[-1])
    entering = tuple(tuple(c[layer] for c in counts) for layer in range(layers + 1))
    return BatchWork(len(lengths), tuple(widths), tuple(eliminating), entering, explicit_attention, planned)


def features(work: BatchWork, dims: ModelDims, heads: int, large_batch: int | None = None) -> np.ndarray:
    """The features of one batch (see the module docstring); `large_batch` is T (None: no large-batch term)."""
    h, f, B = dims.hidden, dims.ffn, work.rows
    widths = work.widths if len(work.widths) > 1 else work.widths * (dims.layers + 1)  # dense: same width
    eliminating = work.eliminating or (False,) * dims.layers
    out = np.zeros(len(FEATURES))
    for layer in range(dims.layers):
        m_in, m_out = widths[layer], widths[layer + 1]
        # patch.py computes the Linears of a padded batch on its real slots (per_token) in a forward that eliminates;
        # a knob that removes nothing (every layer False) is HF's own forward, padding and all
        if any(work.eliminating):
            real_in, real_out = sum(work.lengths[layer]), sum(work.lengths[layer + 1])
            projected = real_in if work.explicit(layer) else B * m_in  # HF's attention projects the padding too
            out[0] += 4 * projected * h * h + 2 * real_out * h * f
        else:
            out[0] += B * (4 * m_in * h * h + 2 * m_out * h * f)
        area = work.attention_area(layer, heads)
        out[1] += 2 * h * area
        out[2] += B * m_in
        if large_batch is not None:
            out[5] += max(0, B * m_in - large_batch)
        if eliminating[layer]:
            out[3] += heads * area if work.explicit(layer) else 0
            out[4] += 1
            out[7] += 0 if work.short_path(layer, heads) else 1
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
    transform: str = "fp32"  # the numerics it was timed under (fp32, int8, bf16): `check` matches rows by it

    @property
    def dims(self) -> ModelDims:
        return ModelDims(self.hidden, self.ffn, self.layers)

    def batch_ms(self, work: BatchWork) -> float:
        x = features(work, self.dims, self.heads, self.large_batch)
        return float(x @ np.array([self.coefficients[f] for f in FEATURES]))

    def save(self, path: str | Path) -> None:
        from tiltbench.files import write_json_atomic

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
    explicit_attention: bool = True,
    always_eliminating: Sequence[bool] | None = None,
) -> tuple[float, float]:
    """(dense-dynamic ms, tiltbench ms) summed over the batches of `lengths` in dataset order; tiltbench's work
    from per-example per-layer `counts` ([N][L+1], realised) when given, else from `schedule`'s plan."""
    dense = tilted = 0.0
    for start in range(0, len(lengths), batch_size):
        batch = list(lengths[start : start + batch_size])
        dense += profile.batch_ms(batch_work(batch, None))
        if counts is not None:
            planned = schedule is None or not schedule.adaptive
            work = batch_work(
                batch,
                None,
                pad_to,
                counts[start : start + batch_size],
                explicit_attention,
                always_eliminating,
                planned,
            )
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
    explicit_attention: bool = True,
    always_eliminating: Sequence[bool] | None = None,
) -> float:
    """Calibrated dense-dynamic / tiltbench latency; from realised per-example `counts` when given."""
    dense, tilted = predict_latency(
        profile,
        lengths,
        batch_size,
        schedule,
        counts=counts,
        explicit_attention=explicit_attention,
        always_eliminating=always_eliminating,
    )
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


# ------------------------------ 3. forecast ---------------------------------------------------------------------


def task_lengths(data: DataConfig, model: str) -> list[int]:
    """Real token lengths (after truncation) of a task's evaluation examples, in dataset order."""
    from transformers import AutoTokenizer

    from tiltbench.data import encode, load_split
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
    if method is not None and method.adaptive:
        raise UserError(
            f"method {method.name!r} decides each input's counts from its content: nothing predicts them before "
            "it runs; `tiltbench offline-tune` and `tiltbench measure` predict from the counts it realises"
        )
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
