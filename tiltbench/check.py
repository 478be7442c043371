"""check(cfg): hold a results folder to the speedup model, and optionally to a baseline run (CI regressions).

Prediction check: each row's measured speedup against dense-dynamic is compared with the prediction (the
calibrated latency model when a profile is given, else the FLOP ratio); the run fails when the median
absolute relative error exceeds `tolerance`.
Regression check (`baseline`): rows are matched by task, method, scorer, checkpoint name, tilt rate, batch size
and padding. A row regresses when its metric drops by more than `metric_tolerance` points, or its speedup
falls by more than the noise the two runs themselves show: three times the combined standard error of the
two speedups, and at least 5 % (`speedup_standard_error`, `MIN_SPEEDUP_ALLOWANCE`). Only ratios measured
within one run are compared, never absolute times across runs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tiltbench.errors import UserError
from tiltbench.latency_model import LatencyProfile, calibrated_speedup
from tiltbench.schedule import Schedule
from tiltbench.speedup import ModelDims


@dataclass(frozen=True)
class CheckConfig:
    results_dir: str
    profile: str | None = None
    tolerance: float = 0.10
    baseline: str | None = None
    metric_tolerance: float = 1.0  # points

    def __post_init__(self) -> None:
        if self.tolerance <= 0 or self.metric_tolerance < 0:
            raise UserError("--tolerance must be positive and --metric-tolerance >= 0")


@dataclass
class CheckReport:
    prediction: str  # "calibrated" or "FLOP"
    rows: list[dict]
    median_abs_error: float
    tolerance: float
    regressions: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.median_abs_error <= self.tolerance and not self.regressions

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def load_rows(results_dir: str | Path) -> list[dict]:
    report = Path(results_dir) / "report.json"
    if not report.is_file():
        raise UserError(f"{str(results_dir)!r} holds no report.json; point at a folder written by measure or sweep")
    try:
        rows = json.loads(report.read_text())["rows"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{report} is not a tiltbench report") from None
    if not rows:
        raise UserError(f"{report} has no rows")
    return rows


def predicted(row: dict, profile: LatencyProfile | None) -> float:
    if profile is None:
        return float(row["predicted_speedup"])
    if "lengths" not in row:
        raise UserError("this report predates calibrated checks (rows lack 'lengths'); measure it again")
    profile.check_dims(ModelDims(row["hidden"], row["ffn"], row["layers"]), row["heads"])
    schedule = Schedule(row["layers"], row["tilt_rate"], row["shape"], None, row["min_tokens"])
    return calibrated_speedup(profile, row["lengths"], row["batch_size"], schedule)


def check(cfg: CheckConfig) -> CheckReport:
    rows = load_rows(cfg.results_dir)
    profile = LatencyProfile.load(cfg.profile) if cfg.profile else None
    table = []
    for row in sorted(rows, key=lambda r: (r["checkpoint"], r["batch_size"], r["tilt_rate"])):
        expected = predicted(row, profile)
        measured = row["speedup_vs_dense_dynamic"]
        table.append(
            {
                "checkpoint": Path(row["checkpoint"]).name,
                "task": row["task"],
                "tilt_rate": row["tilt_rate"],
                "batch_size": row["batch_size"],
                "measured": measured,
                "predicted": expected,
                "error": measured / expected - 1,
            }
        )
    median = statistics.median(abs(r["error"]) for r in table)
    report = CheckReport("calibrated" if profile else "FLOP", table, median, cfg.tolerance)
    if cfg.baseline:
        report.regressions = regressions(load_rows(cfg.baseline), rows, cfg.metric_tolerance)
    return report


def _key(row: dict) -> tuple:
    return (
        row["task"],
        row["method"],
        row["scorer"],
        Path(row["checkpoint"]).name,
        round(row["tilt_rate"], 6),
        row["batch_size"],
        row["pad_to_max"],
    )


# Floor of the speedup allowance. Five `make regress` runs on the 2-core VM against one baseline moved no
# speedup by more than 3.3 % either way (30 comparisons; falls at most 0.9 %), although each run's own
# standard error was 0.4-1.6 %: runs drift apart more than a run can see. 5 % leaves room for that drift,
# while a 10 % slowdown still fails.
MIN_SPEEDUP_ALLOWANCE = 0.05


def speedup_standard_error(row: dict) -> float:
    """Relative standard error of a row's speedup vs dense-dynamic, from the run itself.

    Each timing round passes once over all batches, so each round gives one speedup (dense total / tiltbench
    total); the robust spread of those (1.4826 x MAD / median) over sqrt(rounds). Per-batch sample noise
    overstates it several-fold: the reported speedup sums many batches' medians."""
    n = row["n_batches"]
    dense, tilted = row["latency"]["dense-dynamic"], row["latency"]["tiltbench"]
    rounds = min(dense["count"], tilted["count"]) // n
    if rounds < 2:
        return 0.0
    speedups = [
        sum(dense["samples"][r * n : (r + 1) * n]) / sum(tilted["samples"][r * n : (r + 1) * n]) for r in range(rounds)
    ]
    middle = statistics.median(speedups)
    return 1.4826 * statistics.median(abs(x - middle) for x in speedups) / middle / rounds**0.5


def regressions(baseline: list[dict], rows: list[dict], metric_tolerance: float) -> list[str]:
    """One line per regressed (or missing) row."""
    new = {_key(r): r for r in rows}
    found = []
    for key, old in ((_key(r), r) for r in baseline):
        label = f"{key[3]} tilt {key[4]:g} batch {key[5]}"
        if key not in new:
            found.append(f"{label}: missing from the new run")
            continue
        now = new[key]
        drop = 100 * (old["metric"] - now["metric"])
        if drop > metric_tolerance:
            found.append(
                f"{label}: {now['metric_name']} fell {drop:.2f} points ({old['metric']:.4f} -> "
                f"{now['metric']:.4f}; allowed {metric_tolerance:g})"
            )
        noise = (speedup_standard_error(old) ** 2 + speedup_standard_error(now) ** 2) ** 0.5
        allowed = max(3 * noise, MIN_SPEEDUP_ALLOWANCE)
        fall = 1 - now["speedup_vs_dense_dynamic"] / old["speedup_vs_dense_dynamic"]
        if fall > allowed:
            found.append(
                f"{label}: speedup vs dense-dynamic fell {100 * fall:.1f}% "
                f"({old['speedup_vs_dense_dynamic']:.3f}x -> {now['speedup_vs_dense_dynamic']:.3f}x; "
                f"noise allows {100 * allowed:.1f}%)"
            )
    return found
