"""merge(cfg): join the folders of a sharded sweep (`sweep --shard i/N`) into one run folder.

Shards may run anywhere: a SLURM array, Kubernetes jobs, `accelerate launch`, one machine in turns. Merging
never divides a time taken in one shard by a time taken in another: every speedup in a row is a ratio within
that row's own interleaved group, measured inside its shard, so a merge only concatenates rows. Each merged row
keeps the environment of the shard that measured it (`row.environment`).

Refused, with one line each: a folder that is not a shard, shards of different sweeps (settings, grid or N),
a shard index twice or missing, a shard that has not finished its part, and shards measured on different
hardware (CPU model, CPU signature, cores, GPU, threads) unless `allow_mixed_hardware`: their rows are still each
right, but a Pareto plot or calibration across them mixes machines.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from tiltbench.errors import UserError
from tiltbench.files import check_writable, foreign_entries, run_command
from tiltbench.rows import MeasureRow
from tiltbench.sweep import SweepReport, write_report

HARDWARE = ("cpu", "cpu_signature", "cores", "gpu", "threads")  # a speedup depends on all five
PER_SHARD = ("shard", "shard_keys", "shard_grid_size", "run_name", "results_dir", "force")  # may differ by shard


@dataclass(frozen=True)
class MergeConfig:
    shards: tuple[str, ...]
    _: KW_ONLY
    run_name: str | None = None  # None: the sweep's own --run-name
    results_dir: str = "results"
    allow_mixed_hardware: bool = False
    force: bool = False  # replace an earlier merge in the output folder

    def __post_init__(self) -> None:
        if not self.shards:
            raise UserError("pass the shard folders to merge")
        if self.run_name is not None and (not self.run_name or "/" in self.run_name or self.run_name[0] == "."):
            raise UserError(f"--run-name must be a plain folder name, got {self.run_name!r}")


@dataclass
class _Shard:
    folder: Path
    config: dict
    environment: dict
    rows: list[MeasureRow]

    @property
    def index(self) -> int:
        return self.config["shard"][0]

    @property
    def count(self) -> int:
        return self.config["shard"][1]


def merge(cfg: MergeConfig) -> tuple[Path, SweepReport]:
    """Write the merged run folder; returns it and its report."""
    shards = sorted((_read_shard(Path(f)) for f in cfg.shards), key=lambda s: s.index)
    first = shards[0]
    _check_same_sweep(shards)
    _check_complete(shards)
    mixed = _hardware_differences(shards)
    if mixed and not cfg.allow_mixed_hardware:
        raise UserError(
            f"the shards ran on different hardware ({'; '.join(mixed)}); each row is right on its own, but plots "
            "and calibration would mix machines: rerun them alike, or pass --allow-mixed-hardware"
        )
    run_name = cfg.run_name or first.config["run_name"]
    folder = Path(cfg.results_dir) / run_name
    check_writable(folder, "--results-dir")
    if any(folder.resolve() == s.folder.resolve() for s in shards):
        raise UserError(f"{folder} is one of the shards; merge into another --run-name")
    if foreign_entries(folder):
        merged_before = run_command(folder) == "sweep" and "merged_from" in _json(folder / "config.json", folder)
        if not (cfg.force and merged_before):
            raise UserError(
                f"{folder} is not empty; choose another --run-name"
                + (" or pass --force to replace that earlier merge" if merged_before else " (nothing is overwritten)")
            )
    order = {key: i for i, key in enumerate(_grid_order(shards))}
    rows = []
    for shard in shards:
        for row in shard.rows:
            if row.environment is None:
                row.environment = shard.environment
            rows.append(row)
    rows.sort(key=lambda r: order[r.key])
    config = {k: v for k, v in first.config.items() if k not in ("shard", "shard_keys", "shard_grid_size")}
    config.update(
        run_name=run_name,
        results_dir=cfg.results_dir,
        merged_from=[
            {"folder": str(s.folder), "shard": s.config["shard"], "rows": len(s.rows), "cpu": s.environment.get("cpu")}
            for s in shards
        ],
    )
    environment = dict(first.environment)
    if mixed:
        for name in HARDWARE:
            values = list(dict.fromkeys(str(s.environment.get(name)) for s in shards))
            if len(values) > 1:
                environment[name] = "mixed: " + " | ".join(values)
    environment["mixed_hardware"] = bool(mixed)
    report = SweepReport(config, environment, rows)
    write_report(folder, report, plots=True)
    return folder, report


def _json(path: Path, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{folder} holds no readable {path.name}: not a sweep shard") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a tiltbench file")
    return data


def _read_shard(folder: Path) -> _Shard:
    if not folder.is_dir():
        raise UserError(f"shard folder {str(folder)!r} does not exist")
    config = _json(folder / "config.json", folder)
    shard = config.get("shard")
    if (
        not isinstance(shard, list)
        or len(shard) != 2
        or not all(isinstance(v, int) for v in shard)
        or not isinstance(config.get("shard_keys"), list)
        or not isinstance(config.get("shard_grid_size"), int)
    ):
        raise UserError(f"{folder} is not a shard of a sweep (made by `tiltbench sweep --shard i/N`)")
    report = _json(folder / "report.json", folder)
    try:
        rows = [MeasureRow.from_dict(r) for r in report["rows"]]
        environment = report["environment"]
        if not isinstance(environment, dict):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{folder / 'report.json'} is not a tiltbench report") from None
    return _Shard(folder, config, environment, rows)


def _check_same_sweep(shards: list[_Shard]) -> None:
    first = shards[0]
    settings = {k: v for k, v in first.config.items() if k not in PER_SHARD}
    for shard in shards[1:]:
        other = {k: v for k, v in shard.config.items() if k not in PER_SHARD}
        if other != settings or shard.count != first.count:
            changed = sorted(k for k in {*settings, *other} if settings.get(k) != other.get(k))
            if shard.count != first.count:
                changed.append("N of --shard i/N")
            raise UserError(
                f"{shard.folder} and {first.folder} are shards of different sweeps ({', '.join(changed)} differ); "
                "merge shards made by one sweep command"
            )
    indices = [s.index for s in shards]
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if twice:
        raise UserError(f"shard {twice[0]}/{first.count} is given twice")
    missing = sorted(set(range(first.count)) - set(indices))
    if missing:
        raise UserError(
            f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{first.count}' for i in missing)} "
            f"{'are' if len(missing) > 1 else 'is'} missing: a merge needs all {first.count}"
        )


def _check_complete(shards: list[_Shard]) -> None:
    for shard in shards:
        have = {row.key for row in shard.rows}
        wanted = [_shard_key(key) for key in shard.config["shard_keys"]]
        left = [key for key in wanted if key not in have]
        if left:
            raise UserError(
                f"shard {shard.index}/{shard.count} in {shard.folder} has measured {len(wanted) - len(left)} of "
                f"its {len(wanted)} rows: rerun its sweep command to finish it"
            )
        shard.rows = [row for row in shard.rows if row.key in set(wanted)]
    keys = [row.key for s in shards for row in s.rows]
    if len(set(keys)) != len(keys):
        raise UserError("the shards hold the same row twice: they are not one sweep's disjoint parts")
    total = len(keys)
    if total != shards[0].config["shard_grid_size"]:
        raise UserError(f"the shards hold {total} rows, but the sweep's grid has {shards[0].config['shard_grid_size']}")


def _grid_order(shards: list[_Shard]) -> list[tuple]:
    """Every key in the whole sweep's order: the round-robin deal undone."""
    keys = [[_shard_key(k) for k in s.config["shard_keys"]] for s in shards]
    return [part[j] for j in range(max(map(len, keys))) for part in keys if j < len(part)]


def _hardware_differences(shards: list[_Shard]) -> list[str]:
    out = []
    for name in HARDWARE:
        values = list(dict.fromkeys(s.environment.get(name) for s in shards))
        if len(values) > 1:
            out.append(f"{name}: " + " vs ".join(repr(v) for v in values))
    return out


def _shard_key(key: list) -> tuple:
    """A shard's grid key as MeasureRow.key; keys written before transforms existed lack theirs: fp32."""
    return tuple(key) if len(key) >= 5 else (*key, "fp32")
