"""MeasureRow: one measured row of a measure/sweep run (one checkpoint at one knob value and batch size).

`measure` builds them, `sweep` keeps them (report.json holds `to_dict()` of each), and results.py (report
files), plot.py (figures) and check.py read them; keeping the type here means none of those imports another.
`from_dict` reads report.json rows back, including rows measured before methods had knobs (TiltedBERT's
`tilt_rate` alone, no per-example counts). A row missing anything else predates the report format and is refused
with one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tiltbench.errors import UserError
from tiltbench.schedule import Schedule

KNOB_SHORT = {
    "tilt_rate": "tilt",
    "retention_scale": "scale",
    "keep_list": "list",
    "gate_threshold": "gate",
    "threshold_scale": "θ×",
}


OPTIONAL = (
    "kept_counts",
    "fvcore",
    "kept_tokens_spread",
    "explicit_attention",
    "always_eliminating",
    "environment",
    "device",
    "peak_gpu_mib",
    "transform",
    "transform_baseline",
    "speedup_vs_dense_transform",
    "speedup_from_transform",
    "metric_drop_vs_fp32_points",
    "model_mb",
    "dense_fp32_mb",
    "embeddings",
    "memory_mb",
    "parameters",
    "embedding_share",
)  # absent from older rows


@dataclass
class MeasureRow:
    # what was measured
    checkpoint: str
    model: str  # the model the checkpoint was fine-tuned from
    method: str
    scorer: str
    task: str
    knob_name: str
    knob: float
    batch_size: int
    pad_to_max: bool
    headline_baseline: str  # timed in tiltbench's own group: dense-dynamic, or dense-padded with --pad-to-max
    threads: int
    # the inputs
    n_examples: int  # timed examples
    latency_examples: int
    n_batches: int
    real_tokens: int
    max_seq_len: int
    # the task metric, on `metric_examples` evaluation examples
    metric_name: str
    metric: float
    metric_drop_points: float  # against the same checkpoint at the method's dense knob
    metrics: dict[str, float]
    metric_examples: int
    # speedups: baseline total / tiltbench total (see speedup_estimator)
    speedup_vs_dense_dynamic: float
    speedup_vs_dense_padded: float
    speedup_vs_dense_eager: float
    speedup_from_padding: float  # headline / keep-all
    speedup_from_elimination: float  # keep-all / tiltbench
    speedup_estimator: str
    anchor_latency: dict
    # FLOPs of the realised counts
    predicted_speedup: float  # dense / eliminated encoder MACs
    macs_per_example: float
    flops_per_example: float
    dense_macs_per_example: float
    flop_unit: str
    mean_kept_tokens: list[float]
    # what a latency model needs to re-predict the row: the schedule, the model's sizes, the inputs' lengths
    schedule: dict
    shape: str
    min_tokens: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    lengths: list[int]
    # raw timings (samples included) and throughput per variant
    latency: dict[str, dict]
    throughput: dict[str, dict]
    peak_rss_mib: float
    # [N][L+1] realised per example (None in rows measured before it was recorded: their plan re-predicts them)
    kept_counts: list[list[int]] | None = None
    fvcore: dict | None = None  # fvcore vs analytic MACs on one example (None with fvcore off)
    # spread of the realised counts over the timed examples, per layer [n0..nL]: std, min, max (None: older rows)
    kept_tokens_spread: dict[str, list[float]] | None = None
    # eliminating layers ran tiltbench's own attention (False: HF's, a method that decides before attention)
    explicit_attention: bool = True
    # layers on the eliminating path whatever the counts (LTP from layer 1 on); None: only where tokens left
    always_eliminating: list[bool] | None = None
    # where this row was measured, when it differs by row: set by `merge` on rows of sharded sweeps (None: the
    # run's own environment.json)
    environment: dict | None = None
    device: str = "cpu"  # where the row was timed (cuda: CUDA events, synchronised)
    peak_gpu_mib: dict[str, float] | None = None  # cuda only: peak memory of one forward of each variant
    # [stack]: the numerics of tiltbench's model (fp32, int8, bf16: tiltbench/transforms/). A transformed row
    # is also timed against the same HF model under the same transform (`transform_baseline`, dense-int8 or
    # dense-bf16) in the headline group; then speedup vs headline = speedup_from_transform (headline /
    # dense-<t>) x speedup_from_padding (dense-<t> / keep-all) x speedup_from_elimination (keep-all / tiltbench).
    transform: str = "fp32"
    transform_baseline: str | None = None  # dense-int8 / dense-bf16; None for fp32 rows (there: dense-dynamic)
    speedup_vs_dense_transform: float | None = None  # same-transform dense total / tiltbench total
    speedup_from_transform: float = 1.0  # headline baseline / same-transform dense
    metric_drop_vs_fp32_points: float | None = None  # against HF's dense fp32 model on the same examples
    model_mb: float | None = None  # tiltbench's model, serialised state_dict (10^6 bytes)
    dense_fp32_mb: float | None = None  # the fp32 dense model, the same way
    # [eel]: the input embeddings ("table", or "hashed": tiltbench/transforms/hashed.py), what the model holds in
    # memory (model_mb plus buffers a checkpoint does not save, such as the hashed vocabulary features), its
    # parameters by part (word_embeddings, other_embeddings, encoder, head; of the fp32 model), and the share of
    # tiltbench's forward spent in the embedding layer at this batch size (timed on the same inputs)
    embeddings: str = "table"
    memory_mb: float | None = None
    parameters: dict[str, int] | None = None
    embedding_share: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> MeasureRow:
        """A row of report.json; rows from before methods had knobs read as TiltedBERT at their tilt rate."""
        data = dict(data)
        if "knob" not in data and "tilt_rate" in data:
            rate = data.pop("tilt_rate")
            data.update(knob_name="tilt_rate", knob=rate)
            if {"layers", "shape", "min_tokens"} <= data.keys():
                data["schedule"] = Schedule(data["layers"], rate, data["shape"], None, data["min_tokens"]).to_dict()
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.name not in OPTIONAL]
        if missing:
            raise UserError(
                f"a report row lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: it predates "
                "this version of tiltbench; measure it again"
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self, samples: bool = True) -> dict:
        """The report.json form; `samples=False` drops the raw latency samples (the CLI's --json output)."""
        out = asdict(self)
        if not samples:
            out["latency"] = {
                name: {k: v for k, v in lat.items() if k != "samples"} for name, lat in self.latency.items()
            }
        return out

    @property
    def same_transform_speedup(self) -> float:
        """Speedup against the dense model of the row's own transform (dense-dynamic fp32 for fp32 rows; with
        --pad-to-max, the padded one)."""
        return self.headline_speedup if self.speedup_vs_dense_transform is None else self.speedup_vs_dense_transform

    @property
    def headline_speedup(self) -> float:
        return getattr(self, f"speedup_vs_{self.headline_baseline.replace('-', '_')}")

    @property
    def key(self) -> tuple:
        """What makes a row unique within a run (for resuming)."""
        return (
            str(Path(self.checkpoint)),
            round(self.knob, 6),
            int(self.batch_size),
            bool(self.pad_to_max),
            self.transform,
        )

    @property
    def place(self) -> tuple:
        """Where a row sits in a run's grid, wherever the run's folder lies (baseline comparisons)."""
        return (short_name(self.checkpoint), round(self.knob, 6), int(self.batch_size), self.transform)

    def knob_label(self, short: bool = False) -> str:
        return knob_label(self.knob_name, short)

    def kept_summary(self) -> str:
        """Mean ± std of the tokens after layers 1..L, e.g. '20.1±3.2 12.0±4.1 ...' (std only when recorded)."""
        std = (self.kept_tokens_spread or {}).get("std")
        means = self.mean_kept_tokens[1:]
        if not std:
            return " ".join(f"{m:.1f}" for m in means)
        return " ".join(f"{m:.1f}±{s:.1f}" for m, s in zip(means, std[1:], strict=True))

    def counts_schedule(self) -> Schedule:
        """The schedule the row was measured with."""
        return Schedule.from_dict(self.layers, self.schedule)


def knob_label(knob_name: str, short: bool = False) -> str:
    """'tilt rate' / 'retention scale' (or 'tilt' / 'scale'): what a knob is called."""
    return KNOB_SHORT.get(knob_name, knob_name) if short else knob_name.replace("_", " ")


def short_name(checkpoint: str) -> str:
    """The last two parts of a checkpoint path: 'measure-minilm-sst2/checkpoint' says more than 'checkpoint'."""
    return "/".join(Path(checkpoint).parts[-2:])
