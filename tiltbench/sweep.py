"""sweep(cfg): checkpoints x knob values x batch sizes, one measured row each, into results/<run-name>/.

Each checkpoint moves along its own method's knob (tilt rate for tilted, retention scale for power): one grid
for all (`knobs`), or each method's default grid (`knobs=None`), or a grid per checkpoint (`grids`).

The folder follows optimum-benchmark's layout: config.json, environment.json, report.json, report.csv,
report.md, pareto.png, predicted_vs_measured.png, pareto_size.png. After every row the report files are rewritten
atomically, so an interrupted sweep loses at most the row in flight; rerunning the same command skips finished rows
(`force` redoes them). A folder holding a run with other settings is refused rather than mixed.

Transforms (`transforms`, [stack]): each checkpoint is measured under every named numerics (fp32, int8, bf16),
a grid axis like the knob values; a transformed row is timed against the same-transform dense model too.

Sharding (`shard=(i, N)`, `--shard i/N`): the grid, in its fixed order (checkpoint, transform, batch size,
knob), is dealt round-robin, and shard i (0-based, as a SLURM array index) measures entries i, i+N, i+2N, ...
into its own folder `<run-name>.shard-<i>-of-<N>`. Round-robin rather than blocks: every shard gets a share of
the long-input, large-batch rows. `merge` (tiltbench/merge.py) joins the shard folders. Every speedup is a ratio
of times taken in one interleaved group inside one shard, so merging only concatenates rows.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from pathlib import Path

from tiltbench.environment import environment
from tiltbench.errors import UserError
from tiltbench.files import check_writable, foreign_entries, run_command, write_json_atomic
from tiltbench.inference import Progress
from tiltbench.measure import CheckpointBench, MeasureConfig, measure_data, measure_row
from tiltbench.models import method_from_meta, read_meta
from tiltbench.results import write_report as write_report_files
from tiltbench.rows import MeasureRow
from tiltbench.schedule import parse_grid
from tiltbench.transforms import FP32, check_transform


@dataclass(frozen=True)
class SweepConfig:
    checkpoints: tuple[str, ...]
    _: KW_ONLY  # the rest by name: a dozen positional settings are unreadable and easy to shift
    knobs: tuple[float, ...] | None = None  # one grid for every checkpoint; None: each method's default grid
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    run_name: str = "sweep"
    results_dir: str = "results"
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    force: bool = False
    command: str = "sweep"  # which command made the run ("measure" or "sweep"), recorded in config.json
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)  # checkpoint -> its own grid (overrides)
    shard: tuple[int, int] | None = None  # (i, N): measure the i-th of N round-robin parts of the grid (0-based)
    transforms: tuple[str, ...] = ("fp32",)  # numerics to measure each checkpoint under ([stack]): a grid axis

    def __post_init__(self) -> None:
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 0 <= index < count:
                raise UserError(f"--shard must be i/N with 0 <= i < N, got {index}/{count}")
        if not self.checkpoints:
            raise UserError("pass at least one checkpoint")
        if self.knobs is not None and not self.knobs:
            raise UserError("the knob grid is empty")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        if not self.transforms:
            raise UserError("give at least one transform (fp32, int8, bf16)")
        for name in self.transforms:
            check_transform(name, self.measure.device)
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise UserError(f"--run-name must be a plain folder name, got {self.run_name!r}")

    @property
    def folder(self) -> Path:
        if self.shard is None:
            return Path(self.results_dir) / self.run_name
        return Path(self.results_dir) / shard_folder_name(self.run_name, *self.shard)

    def settings(self) -> dict:
        """What must match for rows to be comparable (the grid itself may grow between runs)."""
        return {"measure": _comparable(asdict(self.measure))}


def _comparable(measure: dict) -> dict:
    """Measurement settings that must match across runs of one folder: the transform is a grid axis (like the
    knob values), so a run may add transforms."""
    return {k: v for k, v in measure.items() if k != "transform"}


def shard_folder_name(run_name: str, index: int, count: int) -> str:
    return f"{run_name}.shard-{index}-of-{count}"


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' (0-based i, as $SLURM_ARRAY_TASK_ID) -> (i, N)."""
    index, slash, count = text.partition("/")
    try:
        parsed = int(index), int(count)
    except ValueError:
        parsed = None
    if not slash or parsed is None or parsed[1] < 1 or not 0 <= parsed[0] < parsed[1]:
        raise UserError(f"--shard must be i/N with 0 <= i < N (e.g. 0/3), got {text!r}")
    return parsed


@dataclass
class SweepReport:
    config: dict
    environment: dict
    rows: list[MeasureRow]
    skipped: int = 0  # rows already in the folder from an earlier run, not measured again

    def to_dict(self, samples: bool = True) -> dict:
        return {
            "config": self.config,
            "environment": self.environment,
            "rows": [row.to_dict(samples) for row in self.rows],
        }


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: the finished rows are on disk; rerunning the same command resumes."""

    def __init__(self, kept: int, folder: Path) -> None:
        super().__init__(f"interrupted: {kept} rows kept in {folder}; rerun the same command to resume")
        self.kept, self.folder = kept, folder


def sweep(cfg: SweepConfig, progress: Progress | None = None) -> SweepReport:
    """Measure every (checkpoint, tilt rate, batch size) not yet in cfg.folder; returns the whole report."""
    check_writable(cfg.folder, "--results-dir")  # before any loading or timing
    grids = {}
    for checkpoint in cfg.checkpoints:
        meta = read_meta(checkpoint)
        measure_data(meta, cfg.measure)  # a bad checkpoint or data option fails before any work
        grids[checkpoint] = checkpoint_grid(cfg, checkpoint, meta)
    previous = _previous_run(cfg)
    rows = list(previous["rows"]) if previous else []
    done = {r.key for r in rows}
    # a value given twice (--knobs 0.1,0.1) is one row, not two: every shard must deal the same distinct grid
    unique: dict[tuple, tuple] = {}
    entries = ((c, t, b, x) for c in cfg.checkpoints for x in cfg.transforms for b in cfg.batch_sizes for t in grids[c])
    for entry in entries:
        unique.setdefault(_key(*entry[:3], False, entry[3]), entry)
    wanted = list(unique.values())
    pad = cfg.measure.pad_to_max
    config = _merged_config(cfg, previous["config"] if previous else None)
    if cfg.shard is not None:
        index, count = cfg.shard
        config["shard_grid_size"] = len(wanted)  # merge checks that the shards' rows cover the whole grid
        wanted = wanted[index::count]
        config["shard_keys"] = [_key(c, t, b, pad, x) for c, t, b, x in wanted]
    todo = [(c, t, b, x) for c, t, b, x in wanted if _key(c, t, b, pad, x) not in done]
    skipped = len(wanted) - len(todo)
    # A run with nothing left to measure keeps the environment its rows were measured in.
    env = previous["environment"] if previous and not todo else environment(seed=cfg.measure.seed)
    for i, (checkpoint, knob, batch_size, transform) in enumerate(todo):
        numerics = "" if transform == FP32 else f" {transform}"
        label = f"row {i + 1}/{len(todo)}: {Path(checkpoint).name}{numerics} knob {knob:g} batch {batch_size}"
        try:
            bench = _bench(checkpoint, replace(cfg.measure, transform=transform))
            row = measure_row(bench, knob, batch_size, _row_progress(progress, label, i, len(todo)))
        except KeyboardInterrupt:
            raise SweepInterrupted(len(rows), cfg.folder) from None
        if cfg.shard is not None:  # a shard may resume on another node: each row keeps where it was measured
            row.environment = {**env, "attn_implementation": bench.dense.config._attn_implementation}
        rows = [r for r in rows if r.key != row.key] + [row]
        env["attn_implementation"] = bench.dense.config._attn_implementation
        write_report(cfg.folder, SweepReport(config, env, rows), plots=False)
    if progress and todo:
        progress("rows: done", len(todo), len(todo))
    report = SweepReport(config, env, rows, skipped)
    write_report(cfg.folder, report, plots=True)
    return report


def _key(checkpoint: str, knob: float, batch_size: int, pad_to_max: bool, transform: str = FP32) -> tuple:
    """MeasureRow.key of the row this grid entry makes."""
    return (str(Path(checkpoint)), round(knob, 6), batch_size, pad_to_max, transform)


def checkpoint_grid(cfg: SweepConfig, checkpoint: str, meta: dict) -> tuple[float, ...]:
    """The knob values to measure for one checkpoint, each checked against its method's range now."""
    method = method_from_meta(meta, _layers(meta))
    grid = cfg.grids.get(checkpoint) or cfg.knobs or tuple(parse_grid(method.default_grid))
    for knob in grid:
        method.schedule(knob)
    return grid


def _layers(meta: dict) -> int:
    schedule = meta["schedule"]
    counts = schedule.get("keep") or schedule.get("fractions") or (meta.get("method_config") or {}).get("fractions")
    return len(counts) if counts else 1


def write_report(folder: Path, report: SweepReport, plots: bool) -> None:
    """config.json with the report files: nothing is written before the first row is measured, so a run that
    fails on its inputs leaves no folder behind."""
    write_json_atomic(folder / "config.json", report.config)
    write_report_files(folder, report.config, report.environment, report.rows, plots)


def _row_progress(progress: Progress | None, label: str, index: int, total: int) -> Progress | None:
    """One bar for the whole sweep: a row's own stages move it within that row's step."""
    if progress is None:
        return None
    return lambda stage, done, of: progress(f"{label} · {stage}", index + done / max(of, 1), total)


def _merged_config(cfg: SweepConfig, old: dict | None) -> dict:
    """config.json of the run: extending a run keeps every checkpoint, knob value and batch size it ever had."""
    config = {"command": cfg.command, **asdict(cfg)}
    if old:
        config["checkpoints"] = list(dict.fromkeys([*old.get("checkpoints", []), *cfg.checkpoints]))
        if cfg.knobs is not None or old.get("knobs") is not None:
            config["knobs"] = sorted({*(old.get("knobs") or old.get("tilt_rates") or []), *(cfg.knobs or [])})
        config["batch_sizes"] = sorted({*old.get("batch_sizes", []), *cfg.batch_sizes})
        config["transforms"] = list(dict.fromkeys([*old.get("transforms", [FP32]), *cfg.transforms]))
    return config


_BENCHES: dict[tuple[str, str], CheckpointBench] = {}


def _bench(checkpoint: str, measure: MeasureConfig) -> CheckpointBench:
    """Load each checkpoint once per process (three model copies and its inputs)."""
    key = (checkpoint, json.dumps(asdict(measure), sort_keys=True))
    if key not in _BENCHES:
        _BENCHES.clear()  # one checkpoint's models in memory at a time
        _BENCHES[key] = CheckpointBench(checkpoint, measure)
    return _BENCHES[key]


def _previous_run(cfg: SweepConfig) -> dict | None:
    """The report already in cfg.folder (to resume or extend), None for a new or empty folder; a folder holding
    anything else, or a run with other measurement settings, is refused rather than mixed."""
    if run_command(cfg.folder) not in ("measure", "sweep") and foreign_entries(cfg.folder):
        raise UserError(
            f"{cfg.folder} is not empty and holds no tiltbench measure/sweep run; choose another --run-name "
            "(nothing in it is overwritten)"
        )
    report_file = cfg.folder / "report.json"
    if cfg.force or not report_file.is_file():
        return None
    try:
        previous = json.loads(report_file.read_text())
        old_settings = {"measure": _comparable({"device": "cpu", **previous["config"]["measure"]})}  # older: cpu
        previous["rows"] = [MeasureRow.from_dict(r) for r in previous["rows"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{report_file} is not a tiltbench report; use another --run-name or --force") from None
    except UserError as old_format:  # rows from an older report format: they cannot be extended, only redone
        raise UserError(f"{report_file}: {old_format} (--force, or another --run-name)") from None
    if old_settings != cfg.settings():
        now = _comparable(asdict(cfg.measure))
        changed = sorted(k for k in now if old_settings["measure"].get(k) != now[k])
        raise UserError(
            f"{cfg.folder} holds a run with other settings ({', '.join(changed)}); "
            "use another --run-name, or --force to start it again"
        )
    return previous
