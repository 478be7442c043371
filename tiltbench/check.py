"""check(cfg): hold a results folder to the speedup model, and optionally to a baseline run (CI regressions).

Prediction check: each row's measured speedup against dense-dynamic is compared with the prediction (the
calibrated latency model when a profile is given, else the FLOP ratio); the run fails when the median
absolute relative error over the eliminating rows exceeds `tolerance`. Rows at tilt rate 0 are shown but left
out of the median: both sides are 1 by construction there, and counting them would dilute the error.
Transforms: a row under int8 or bf16 is held to the profile calibrated under the same transform (`--profile`
once per transform), by its speedup against the same-transform dense model, which is what that profile models.
Regression check (`baseline`): rows are matched by their place in the grid (checkpoint, knob, batch, transform);
matched rows must share their full identity (`IDENTITY`: model, task, method, knob, threads, lengths, ...), else the
comparison is refused and the differing field named. A row regresses when its metric drops by more than
`metric_tolerance` points, or its speedup against the headline baseline moves, down *or up*, by more than the noise
the runs themselves show: three times the combined standard error of the two speedups, at least 5 %
(`speedup_standard_error`, `MIN_SPEEDUP_ALLOWANCE`), and at least the spread (max - min over median) of the
baseline's own sweeps of that row where it was built from several (`benchmarks/median_baseline.py` records them), up
to 8 % (`MAX_SPREAD_ALLOWANCE`): between-run drift that no single run's standard error sees. A sudden gain is as
suspicious as a loss (a baseline that stopped computing something, a broken timer). Only ratios measured within one
run are compared, never absolute times across runs. Even ratios move with the hardware (a CI machine with another
CPU measured tilt 0.4 at batch 16 2.23x where the baseline's machine measured 2.54x, both matching their own
calibrated model), so speedups are compared only when both runs name the same CPU, CPU signature, core count and GPU
(`HARDWARE`); otherwise the report says so in `notes`, and metrics alone are held to the baseline while the
calibrated check of this machine remains the speed gate.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path

from tiltbench.errors import UserError
from tiltbench.rows import MeasureRow, short_name
from tiltbench.speed_model import LatencyProfile, ModelDims, calibrated_speedup
from tiltbench.transforms import FP32

# What must be equal for two rows at the same grid place to be compared.
IDENTITY = (
    "model",
    "transform",
    "task",
    "method",
    "knob_name",
    "scorer",
    "shape",
    "min_tokens",
    "pad_to_max",
    "threads",
    "max_seq_len",
    "latency_examples",
    "n_examples",
)

# Environment fields that must match for speedups to be compared with a baseline (threads are in IDENTITY).
HARDWARE = ("cpu", "cpu_signature", "cores", "gpu")


@dataclass(frozen=True)
class CheckConfig:
    results_dir: str
    _: KW_ONLY  # the rest by name: a dozen positional settings are unreadable and easy to shift
    profile: str | tuple[str, ...] | None = None  # one profile, or one per transform the run measured
    tolerance: float = 0.10
    baseline: str | None = None
    metric_tolerance: float = 1.0  # points
    transform: str | None = None  # check only the rows under this transform (None: every row)

    @property
    def profiles(self) -> tuple[str, ...]:
        if self.profile is None:
            return ()
        return (self.profile,) if isinstance(self.profile, str) else tuple(self.profile)

    def __post_init__(self) -> None:
        if self.tolerance <= 0 or self.metric_tolerance < 0:
            raise UserError("--tolerance must be positive and --metric-tolerance >= 0")


@dataclass(frozen=True)
class CheckRow:
    """One measured row against its prediction."""

    checkpoint: str  # short name
    task: str
    method: str
    knob_name: str
    knob: float
    batch_size: int
    transform: str  # fp32, int8, bf16
    measured: float  # speedup vs dense-dynamic (a transformed row: vs the same-transform dense model)
    predicted: float
    error: float  # measured / predicted - 1
    counted: bool  # False at the dense knob (HF's own forward: 1 vs 1 by construction, not evidence)


@dataclass
class CheckReport:
    prediction: str  # "calibrated" or "FLOP"
    rows: list[CheckRow]
    median_abs_error: float | None  # over rows that remove tokens; None when there are none (baseline check only)
    tolerance: float
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not compared, and why

    @property
    def prediction_ok(self) -> bool:
        return self.median_abs_error is None or self.median_abs_error <= self.tolerance

    @property
    def passed(self) -> bool:
        return self.prediction_ok and not self.regressions

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def load_rows(results_dir: str | Path) -> list[MeasureRow]:
    """The measured rows of a measure/sweep folder; anything else is one clear UserError."""
    folder = Path(results_dir)
    report = folder / "report.json"
    if not report.is_file():
        raise UserError(f"{str(results_dir)!r} holds no report.json; point at a folder written by measure or sweep")
    try:
        data = json.loads(report.read_text())
        rows = data["rows"]
        measured = all("speedup_vs_dense_dynamic" in r for r in rows)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise UserError(f"{report} is not a tiltbench report") from None
    if "chosen_tilt_rate" in data or "chosen_knob" in data or not measured:
        raise UserError(
            f"{results_dir} is an offline-tune run: it holds metrics and predicted speedups but no timings; "
            "check a folder written by `tiltbench measure` or `tiltbench sweep`"
        )
    if not rows:
        raise UserError(f"{report} has no rows")
    try:
        return [MeasureRow.from_dict(row) for row in rows]
    except (TypeError, ValueError):
        raise UserError(f"{report} is not a tiltbench report") from None


def load_hardware(results_dir: str | Path) -> dict:
    """The `HARDWARE` fields of a run's recorded environment (empty when it recorded none)."""
    environment = json.loads((Path(results_dir) / "report.json").read_text()).get("environment") or {}
    return {name: environment.get(name) for name in HARDWARE} if isinstance(environment, dict) else {}


def hardware_difference(baseline: dict, run: dict) -> str | None:
    """Why speedups of two runs are not comparable ('cpu: AMD EPYC there, Intel Xeon here'), or None."""

    def shown(name: str, value: object) -> str:  # a run before environment() recorded the signature has none
        return "not recorded (an older run)" if name == "cpu_signature" and value is None else repr(value)

    differing = [
        f"{k}: {shown(k, baseline.get(k))} there, {shown(k, run.get(k))} here"
        for k in HARDWARE
        if baseline.get(k) != run.get(k)
    ]
    return "; ".join(differing) or None


def predicted(row: MeasureRow, profile: LatencyProfile | None) -> float:
    if profile is None:
        return float(row.predicted_speedup)
    profile.check_dims(ModelDims(row.hidden, row.ffn, row.layers), row.heads)
    # the realised per-example counts: a data-dependent method has no plan to re-run
    return calibrated_speedup(
        profile,
        row.lengths,
        row.batch_size,
        row.counts_schedule(),
        row.kept_counts,
        row.explicit_attention,
        row.always_eliminating,
    )


def check(cfg: CheckConfig) -> CheckReport:
    rows = load_rows(cfg.results_dir)
    if cfg.transform is not None:
        rows = [r for r in rows if r.transform == cfg.transform]
        if not rows:
            raise UserError(f"{cfg.results_dir} has no rows measured under {cfg.transform}")
    baseline = load_rows(cfg.baseline) if cfg.baseline else None
    if baseline is not None and cfg.transform is not None:
        baseline = [r for r in baseline if r.transform == cfg.transform]
        if not baseline:
            raise UserError(f"the baseline {cfg.baseline} has no rows under {cfg.transform}: nothing to compare")
    profiles = _profiles_by_transform(cfg.profiles, {r.transform for r in rows})
    table = []
    for row in sorted(rows, key=lambda r: (r.checkpoint, r.transform, r.batch_size, r.knob)):
        expected = predicted(row, profiles.get(row.transform))
        # a profile models its own transform's dense and eliminating times: a transformed row is held to it by
        # its speedup against the same-transform dense model
        measured = row.speedup_vs_dense_dynamic if row.transform == FP32 else row.same_transform_speedup
        table.append(
            CheckRow(
                checkpoint=short_name(row.checkpoint),
                task=row.task,
                method=row.method,
                knob_name=row.knob_name,
                knob=row.knob,
                batch_size=row.batch_size,
                transform=row.transform,
                measured=measured,
                predicted=expected,
                error=measured / expected - 1,
                counted=not row.counts_schedule().is_identity,
            )
        )
    counted = [abs(r.error) for r in table if r.counted]
    if not counted and baseline is None:
        raise UserError(
            f"{cfg.results_dir} has no row that removes tokens (all at the dense knob value): nothing to hold "
            "the prediction to; measure some knob values above 0, or pass --baseline"
        )
    median = statistics.median(counted) if counted else None
    report = CheckReport("calibrated" if profiles else "FLOP", table, median, cfg.tolerance)
    if baseline is not None:
        difference = hardware_difference(load_hardware(cfg.baseline), load_hardware(cfg.results_dir))
        if difference:
            report.notes.append(
                f"speedups not compared with {cfg.baseline}: it was measured on other hardware ({difference}); "
                "metrics were compared, and the speed gate is the prediction check of this machine. "
                "Refresh the baseline on this machine to compare speedups (make regress-baseline)"
            )
        report.regressions = regressions(
            baseline, rows, cfg.metric_tolerance, compare_speedups=not difference, spreads=load_spreads(cfg.baseline)
        )
    return report


def _profiles_by_transform(paths: tuple[str, ...], transforms: set[str]) -> dict[str, LatencyProfile]:
    """The given profiles keyed by the transform each was calibrated under; every transform among the rows
    needs one (or none is given: the FLOP prediction for all)."""
    profiles: dict[str, LatencyProfile] = {}
    for path in paths:
        profile = LatencyProfile.load(path)
        if profile.transform in profiles:
            raise UserError(f"two profiles for {profile.transform}: give one per transform")
        profiles[profile.transform] = profile
    missing = sorted(transforms - set(profiles))
    if profiles and missing:
        have = ", ".join(sorted(profiles))
        raise UserError(
            f"the run has rows under {', '.join(missing)} but the profiles given were calibrated under {have}; "
            "calibrate with --quantize/--dtype for each, or check one transform with --quantize/--dtype"
        )
    return profiles


def identity_difference(a: MeasureRow, b: MeasureRow) -> str | None:
    """The first `IDENTITY` field in which two rows differ (their speedups are not comparable), or None."""
    return next((k for k in IDENTITY if getattr(a, k) != getattr(b, k)), None)


def _match(old: MeasureRow, candidates: list[MeasureRow]) -> MeasureRow:
    """The candidate with the same identity as `old`; UserError naming the first differing field otherwise."""
    for row in candidates:
        if identity_difference(row, old) is None:
            return row
    row = candidates[0]
    name = identity_difference(row, old)
    checkpoint, knob, batch, _ = old.place
    raise UserError(
        f"the baseline's row {checkpoint} {old.knob_label(short=True)} {knob:g} batch {batch} differs from this "
        f"run in {name!r}: {getattr(old, name)!r} there, {getattr(row, name)!r} here; compare runs made with the "
        "same settings, or refresh the baseline (make regress-baseline)"
    )


# Floor of the speedup allowance. Five `make regress` runs on the 2-core VM against one baseline moved no
# speedup by more than 3.3 % either way (30 comparisons; falls at most 0.9 %), although each run's own
# standard error was 0.4-1.6 %: runs drift apart more than a run can see. 5 % leaves room for that drift,
# while a 10 % change still fails.
MIN_SPEEDUP_ALLOWANCE = 0.05
# Cap of the allowance a baseline's own spread can grant (`load_spreads`): one wild sweep among the baseline's three
# must not switch a row's speed check off. Three sweeps on one host spread at most 7.3 % (batch 1); a change of
# 10 % fails on every row whatever the baseline saw (median_baseline.py warns when a row spreads beyond the cap).
MAX_SPREAD_ALLOWANCE = 0.08


def speedup_standard_error(row: MeasureRow) -> float:
    """Relative standard error of a row's speedup vs its headline baseline, from the run itself.

    Each timing round passes once over all batches, so each round gives one speedup (baseline total / tiltbench
    total); the robust spread of those (1.4826 x MAD / median) over sqrt(rounds). Per-batch sample noise
    overstates it several-fold: the reported speedup sums many batches' medians."""
    n = row.n_batches
    dense, tilted = row.latency[row.headline_baseline], row.latency["tiltbench"]
    rounds = min(dense["count"], tilted["count"]) // n
    if rounds < 2:
        return 0.0
    speedups = [
        sum(dense["samples"][r * n : (r + 1) * n]) / sum(tilted["samples"][r * n : (r + 1) * n]) for r in range(rounds)
    ]
    middle = statistics.median(speedups)
    return 1.4826 * statistics.median(abs(x - middle) for x in speedups) / middle / rounds**0.5


def load_spreads(results_dir: str | Path) -> dict[tuple, float]:
    """Per place in the grid, the relative spread (max - min) / median of the headline speedups of the sweeps a
    baseline was built from (`speedup_readings` in its config), at most `MAX_SPREAD_ALLOWANCE`; empty for a
    baseline of one sweep."""
    config = json.loads((Path(results_dir) / "report.json").read_text()).get("config")
    entries = config.get("speedup_readings") if isinstance(config, dict) else None
    spreads = {}
    bad = UserError(f"{results_dir}: its config's speedup_readings are not [{{place: [checkpoint, knob, batch, "
                    "transform], readings: [positive speedups]}}, ...]")  # fmt: skip
    try:
        for entry in entries or []:
            readings = sorted(float(x) for x in entry["readings"])
            if not readings or not all(0 < x < math.inf for x in readings):
                raise bad
            if not isinstance(entry["place"], list) or len(entry["place"]) != 4:
                raise bad
            spread = (readings[-1] - readings[0]) / statistics.median(readings)
            spreads[tuple(entry["place"])] = min(spread, MAX_SPREAD_ALLOWANCE)
    except (KeyError, TypeError, ValueError):
        raise bad from None
    return spreads


def regressions(
    baseline: list[MeasureRow],
    rows: list[MeasureRow],
    metric_tolerance: float,
    compare_speedups: bool = True,
    spreads: dict[tuple, float] | None = None,
) -> list[str]:
    """One line per regressed, suspiciously improved or missing row; UserError when rows are not comparable.
    `spreads`: per place, how far the baseline's own sweeps of that row spread (`load_spreads`)."""
    found = []
    for old in baseline:
        checkpoint, knob, batch, transform = old.place
        label = f"{checkpoint} {old.knob_label(short=True)} {knob:g} batch {batch}" + (
            f" {transform}" if transform != "fp32" else ""
        )
        candidates = [r for r in rows if r.place == old.place]
        if not candidates:
            found.append(f"{label}: missing from the new run")
            continue
        now = _match(old, candidates)
        drop = 100 * (old.metric - now.metric)
        if drop > metric_tolerance:
            found.append(
                f"{label}: {now.metric_name} fell {drop:.2f} points ({old.metric:.4f} -> "
                f"{now.metric:.4f}; allowed {metric_tolerance:g})"
            )
        if not compare_speedups:
            continue
        noise = (speedup_standard_error(old) ** 2 + speedup_standard_error(now) ** 2) ** 0.5
        spread = (spreads or {}).get(old.place, 0.0)
        allowed = max(3 * noise, MIN_SPEEDUP_ALLOWANCE, spread)
        before, after = old.headline_speedup, now.headline_speedup
        change = after / before - 1
        if abs(change) > allowed:
            verb = "fell" if change < 0 else "rose (as suspicious as a fall: a changed baseline or timer?)"
            found.append(
                f"{label}: speedup vs {now.headline_baseline} {verb} {100 * abs(change):.1f}% "
                f"({before:.3f}x -> {after:.3f}x; noise allows {100 * allowed:.1f}%"
                + (f", the spread of the baseline's sweeps {100 * spread:.1f}%)" if spread else ")")
            )
    return found
