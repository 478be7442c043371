"""Analytic speedup model: encoder multiply-accumulates (MACs) of a keep schedule against the dense model.

Layer l runs attention on m = n_{l-1} tokens and its FFN on n_l tokens (our placement, see patch.py):

    MACs_l = 4*m*h^2 (Q, K, V, output projections) + 2*m^2*h (QK^T and AV) + 2*n_l*h*f (two FFN Linears)

FLOPs = 2 x MACs (fvcore counts one multiply-add as one flop, i.e. it reports MACs). Embeddings, pooler,
classifier, softmax, LayerNorm and the scoring/gather overhead are left out. For a dataset, each example is
counted at its own real length, and speedup = sum of dense MACs / sum of MACs with the schedule. This is the
per-example ratio papers quote. At batch > 1 the dense-dynamic baseline also computes its batch's padding
while tiltbench's eliminating layers compute none in attention (eliminate.row_chunks), so measured speedups
there can exceed this ratio; the calibrated model (latency_model.py) counts the padding.

References: ../shared/methods.md §9.1 (derivation, reference implementation), nanoGPT `estimate_mfu`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tiltbench.errors import UserError
from tiltbench.schedule import Schedule, Shape


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
