"""sweep(cfg): checkpoints x tilt rates x batch sizes, one measured row each, into results/<run-name>/.

The folder follows optimum-benchmark's layout: config.json, environment.json, report.json, report.csv,
report.md, pareto.png, predicted_vs_measured.png. After every row the report files are rewritten atomically,
so an interrupted sweep loses at most the row in flight; rerunning the same command skips finished rows
(`force` redoes them). A folder holding a run with other settings is refused rather than mixed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tiltbench.errors import UserError
from tiltbench.inference import Progress
from tiltbench.measure import CheckpointBench, MeasureConfig, measure_row, row_key
from tiltbench.models import read_meta
from tiltbench.report import environment, write_json_atomic
from tiltbench.results import write_report


@dataclass(frozen=True)
class SweepConfig:
    checkpoints: tuple[str, ...]
    tilt_rates: tuple[float, ...]
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    run_name: str = "sweep"
    results_dir: str = "results"
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    force: bool = False

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise UserError("pass at least one checkpoint")
        if not self.tilt_rates:
            raise UserError("the tilt-rate grid is empty")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise UserError(f"--run-name must be a plain folder name, got {self.run_name!r}")

    @property
    def folder(self) -> Path:
        return Path(self.results_dir) / self.run_name

    def settings(self) -> dict:
        """What must match for rows to be comparable (the grid itself may grow between runs)."""
        return {"measure": asdict(self.measure)}


@dataclass
class SweepReport:
    config: dict
    environment: dict
    rows: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def sweep(cfg: SweepConfig, progress: Progress | None = None) -> SweepReport:
    """Measure every (checkpoint, tilt rate, batch size) not yet in cfg.folder; returns the whole report."""
    for checkpoint in cfg.checkpoints:
        read_meta(checkpoint)  # fail on a bad checkpoint before any work
    rows = [] if cfg.force else _finished_rows(cfg)
    done = {row_key(r) for r in rows}
    todo = [
        (c, t, b)
        for c in cfg.checkpoints
        for b in cfg.batch_sizes
        for t in cfg.tilt_rates
        if (str(Path(c)), round(t, 6), b, cfg.measure.pad_to_max) not in done
    ]
    config = {"command": "sweep", **asdict(cfg)}
    env = environment(seed=cfg.measure.seed)
    write_json_atomic(cfg.folder / "config.json", config)
    for i, (checkpoint, tilt_rate, batch_size) in enumerate(todo):
        bench = _bench(checkpoint, cfg.measure, progress)
        if progress:
            progress(f"rows: {Path(checkpoint).name} tilt {tilt_rate:g} batch {batch_size}", i, len(todo))
        rows = [
            r
            for r in rows
            if row_key(r) != (str(Path(checkpoint)), round(tilt_rate, 6), batch_size, cfg.measure.pad_to_max)
        ]
        rows.append(measure_row(bench, tilt_rate, batch_size))
        env["attn_implementation"] = bench.dense.config._attn_implementation
        report = SweepReport(config, env, rows)
        write_report(cfg.folder, report.to_dict(), plots=False)
    if progress and todo:
        progress("rows: done", len(todo), len(todo))
    report = SweepReport(config, env, rows)
    write_report(cfg.folder, report.to_dict(), plots=True)
    return report


_BENCHES: dict[tuple[str, str], CheckpointBench] = {}


def _bench(checkpoint: str, measure: MeasureConfig, progress: Progress | None) -> CheckpointBench:
    """Load each checkpoint once per process (three model copies and its inputs)."""
    key = (checkpoint, json.dumps(asdict(measure), sort_keys=True))
    if key not in _BENCHES:
        _BENCHES.clear()  # one checkpoint's models in memory at a time
        _BENCHES[key] = CheckpointBench(checkpoint, measure, progress)
    return _BENCHES[key]


def _finished_rows(cfg: SweepConfig) -> list[dict]:
    report_file = cfg.folder / "report.json"
    if not report_file.is_file():
        return []
    try:
        previous = json.loads(report_file.read_text())
        old_settings = {"measure": previous["config"]["measure"]}
    except (json.JSONDecodeError, KeyError):
        raise UserError(f"{report_file} is not a tiltbench report; use another --run-name or --force") from None
    if old_settings != cfg.settings():
        now = asdict(cfg.measure)
        changed = sorted(k for k in now if old_settings["measure"].get(k) != now[k])
        raise UserError(
            f"{cfg.folder} holds a run with other settings ({', '.join(changed)}); "
            "use another --run-name, or --force to start it again"
        )
    return list(previous["rows"])
