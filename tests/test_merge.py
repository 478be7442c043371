"""sweep --shard i/N and merge: a grid measured as 3 shards and merged holds the rows of the whole sweep."""

from __future__ import annotations

import json

import pytest
from conftest import DATA_DIR
from typer.testing import CliRunner

from tiltbench.cli import app
from tiltbench.errors import UserError
from tiltbench.measure import MeasureConfig
from tiltbench.merge import MergeConfig, merge
from tiltbench.sweep import SweepConfig, parse_shard, sweep

RATES, BATCHES = (0.0, 0.2, 0.4), (1, 4)


def _config(checkpoint: str, tmp_path, run_name: str, shard=None, min_iterations: int = 2) -> SweepConfig:
    measure = MeasureConfig(
        data_dir=str(DATA_DIR),
        max_eval_samples=16,
        latency_examples=8,
        warmup=0,
        min_iterations=min_iterations,
        min_seconds=0.0,
        fvcore=False,
    )
    return SweepConfig(
        (checkpoint,),
        knobs=RATES,
        batch_sizes=BATCHES,
        run_name=run_name,
        results_dir=str(tmp_path),
        measure=measure,
        shard=shard,
    )


@pytest.fixture(scope="module")
def shards(tiny_checkpoint, tmp_path_factory):
    """The same grid swept whole and as 3 shards, in one results folder."""
    results = tmp_path_factory.mktemp("sharded")
    whole = sweep(_config(tiny_checkpoint, results, "whole"))
    folders = []
    for i in range(3):
        cfg = _config(tiny_checkpoint, results, "grid", shard=(i, 3))
        sweep(cfg)
        folders.append(str(cfg.folder))
    return results, whole, folders


def test_three_merged_shards_hold_the_rows_of_the_whole_sweep(shards):
    results, whole, folders = shards
    assert [p.rsplit("/", 1)[1] for p in folders] == [f"grid.shard-{i}-of-3" for i in range(3)]
    sizes = [len(json.loads(open(f"{f}/report.json").read())["rows"]) for f in folders]
    assert sizes == [2, 2, 2]  # 6 grid entries dealt round-robin
    folder, merged = merge(MergeConfig(tuple(reversed(folders)), run_name="merged", results_dir=str(results)))
    assert folder == results / "merged"
    assert [r.key for r in merged.rows] == [r.key for r in whole.rows]  # the whole sweep's order, too
    by_key = {r.key: r for r in whole.rows}
    for row in merged.rows:
        assert row.metrics == by_key[row.key].metrics and row.metric == by_key[row.key].metric
        assert row.mean_kept_tokens == by_key[row.key].mean_kept_tokens
        assert row.environment["cpu"] and row.environment["threads"] >= 1  # each row keeps where it ran
    saved = json.loads((folder / "report.json").read_text())
    assert len(saved["rows"]) == 6 and saved["config"]["command"] == "sweep"
    assert [m["shard"] for m in saved["config"]["merged_from"]] == [[0, 3], [1, 3], [2, 3]]
    assert "shard_keys" not in saved["config"] and saved["environment"]["mixed_hardware"] is False
    assert (folder / "pareto.png").is_file() and (folder / "report.md").is_file()


def test_merge_refuses_what_does_not_make_one_sweep(shards, tiny_checkpoint, tmp_path):
    results, _, folders = shards
    out = {"results_dir": str(tmp_path)}
    with pytest.raises(UserError, match="shard 1/3 is missing"):
        merge(MergeConfig((folders[0], folders[2]), **out))
    with pytest.raises(UserError, match="given twice"):
        merge(MergeConfig((folders[0], folders[0], folders[1], folders[2]), **out))
    with pytest.raises(UserError, match="not a shard"):
        merge(MergeConfig((str(results / "whole"), *folders), **out))
    other = _config(tiny_checkpoint, tmp_path, "other", shard=(1, 3), min_iterations=3)
    sweep(other)
    with pytest.raises(UserError, match="different sweeps.*measure"):
        merge(MergeConfig((folders[0], str(other.folder), folders[2]), **out))
    with pytest.raises(UserError, match="not empty"):  # never over a folder the user owns
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("mine")
        merge(MergeConfig(tuple(folders), run_name="mine", **out))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_merge_refuses_an_unfinished_shard_and_mixed_hardware_unless_asked(shards, tmp_path):
    import shutil

    _, _, folders = shards
    copies = [shutil.copytree(f, tmp_path / f.rsplit("/", 1)[1]) for f in folders]
    report = json.loads((copies[1] / "report.json").read_text())
    unfinished = {**report, "rows": report["rows"][:1]}
    (copies[1] / "report.json").write_text(json.dumps(unfinished))
    with pytest.raises(UserError, match="shard 1/3 .* has measured 1 of its 2 rows"):
        merge(MergeConfig(tuple(map(str, copies)), results_dir=str(tmp_path)))
    report["environment"]["cpu"] = "Some Other CPU"  # as if shard 1 ran on another machine
    for row in report["rows"]:
        row["environment"]["cpu"] = "Some Other CPU"
    (copies[1] / "report.json").write_text(json.dumps(report))
    with pytest.raises(UserError, match="different hardware.*Some Other CPU"):
        merge(MergeConfig(tuple(map(str, copies)), results_dir=str(tmp_path)))
    folder, merged = merge(MergeConfig(tuple(map(str, copies)), results_dir=str(tmp_path), allow_mixed_hardware=True))
    assert merged.environment["mixed_hardware"] is True and "mixed: " in merged.environment["cpu"]
    here = json.loads((copies[0] / "report.json").read_text())["environment"]["cpu"]
    assert [r.environment["cpu"] for r in merged.rows].count("Some Other CPU") == 2  # shard 1's two rows
    assert {r.environment["cpu"] for r in merged.rows} == {"Some Other CPU", here}
    with pytest.raises(UserError, match="--force to replace"):
        merge(MergeConfig(tuple(map(str, copies)), results_dir=str(tmp_path), allow_mixed_hardware=True))
    merge(MergeConfig(tuple(map(str, copies)), results_dir=str(tmp_path), allow_mixed_hardware=True, force=True))


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard_is_one_error_line(text):
    with pytest.raises(UserError, match="--shard must be i/N"):
        parse_shard(text)


def test_merge_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: shard folder")
    assert len(result.stderr.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["sweep", "--checkpoint", str(tmp_path), "--shard", "2/2"])
    assert result.exit_code == 2 and "--shard must be i/N" in result.stderr


def test_a_value_given_twice_is_one_row(tiny_checkpoint, tmp_path):
    """--knobs 0.2,0.2 or a repeated batch size: one row each, so every shard deals the same distinct grid."""
    cfg = _config(tiny_checkpoint, tmp_path, "dup", shard=(0, 2))
    cfg = SweepConfig(cfg.checkpoints, knobs=(0.2, 0.2), batch_sizes=(4, 4), run_name="dup",
                      results_dir=str(tmp_path), measure=cfg.measure, shard=(0, 2))  # fmt: skip
    sweep(cfg)
    config = json.loads((cfg.folder / "config.json").read_text())
    assert config["shard_grid_size"] == 1 and len(config["shard_keys"]) == 1
    report = json.loads((cfg.folder / "report.json").read_text())
    assert len(report["rows"]) == 1 and report["rows"][0]["environment"]["cpu"]  # the row keeps where it ran
