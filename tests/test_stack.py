"""[stack]: int8 and bf16 transforms on a real (tiny) checkpoint, composed with elimination; measured against
the same-transform dense model; offline-tuned after the transform; checked against the profile of its own
transform."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch
from conftest import DATA_DIR, random_batch

from tiltbench import UserError, patch, realised_counts
from tiltbench.check import CheckConfig, check
from tiltbench.data import DataConfig
from tiltbench.latency import Latency, robust_total
from tiltbench.measure import MeasureConfig
from tiltbench.models import load_checkpoint
from tiltbench.offline import OfflineConfig, offline_tune
from tiltbench.speed_model import FEATURES, LatencyProfile
from tiltbench.sweep import SweepConfig, sweep
from tiltbench.transforms import apply_spec, check_transform, parse_transforms, transform_spec


def _linears(model: torch.nn.Module) -> list[type]:
    """The types of a model's Linear layers (float or quantised; not the packed-weight holders inside the latter)."""
    return [type(m) for m in model.modules() if type(m).__name__ == "Linear"]


def test_int8_quantises_every_linear_and_elimination_still_removes_tokens(tiny_checkpoint):
    fp32, *_ = load_checkpoint(tiny_checkpoint)
    int8, *_ = load_checkpoint(tiny_checkpoint, transform="int8")
    assert all(cls is torch.nn.Linear for cls in _linears(fp32))
    quantised = _linears(int8)
    assert quantised and all(cls is torch.ao.nn.quantized.dynamic.Linear for cls in quantised)
    batch = random_batch(lengths=[20, 9], vocab=1000)
    with torch.inference_mode():
        reference, kept_fp32 = fp32(**batch).logits, realised_counts(fp32).clone()
        out, kept = int8(**batch).logits, realised_counts(int8)
    assert kept[0, -1] < 20  # tokens physically left the int8 model too
    assert torch.equal(kept, kept_fp32)  # a planned schedule: the same counts whatever the numerics
    assert not torch.equal(out, reference)  # int8 arithmetic, not the fp32 model
    assert torch.allclose(out, reference, atol=0.1)  # but close to it


def test_bf16_casts_model_and_method_and_runs_eliminating(tiny_checkpoint):
    model, *_ = load_checkpoint(tiny_checkpoint, transform="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    fp32, *_ = load_checkpoint(tiny_checkpoint)
    batch = random_batch(lengths=[20, 3], vocab=1000)
    with torch.inference_mode():
        out, reference = model(**batch).logits, fp32(**batch).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), reference, atol=0.05)


def test_bf16_raises_onednns_primitive_cache_unless_the_user_set_it(tiny_checkpoint, monkeypatch):
    from tiltbench.transforms.bf16 import PRIMITIVE_CACHE_CAPACITY, PRIMITIVE_CACHE_VARIABLE, BFloat16

    monkeypatch.delenv(PRIMITIVE_CACHE_VARIABLE, raising=False)
    load_checkpoint(tiny_checkpoint, transform="bf16")
    assert os.environ[PRIMITIVE_CACHE_VARIABLE] == str(PRIMITIVE_CACHE_CAPACITY)  # set by apply, before any matmul
    assert PRIMITIVE_CACHE_CAPACITY > 1024  # oneDNN's default, which eliminating models thrash on long inputs
    assert BFloat16().config()["onednn_primitive_cache_capacity"] == str(PRIMITIVE_CACHE_CAPACITY)
    monkeypatch.setenv(PRIMITIVE_CACHE_VARIABLE, "300")
    load_checkpoint(tiny_checkpoint, transform="bf16")
    assert BFloat16().config()["onednn_primitive_cache_capacity"] == "300"  # the user's setting wins


def test_bf16_casts_a_gates_method_beside_the_model():
    from conftest import tiny_bert

    model = tiny_bert()
    patch(model, method="gates")
    apply_spec(model, "bf16")
    from tiltbench.patch import method_of

    assert {p.dtype for p in method_of(model).parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        assert torch.isfinite(model(**random_batch(lengths=[12, 5])).logits.float()).all()


def test_transform_options_are_checked():
    assert transform_spec("none", "fp32") == "fp32"
    assert transform_spec("int8", "fp32") == "int8" and transform_spec("none", "bf16") == "bf16"
    with pytest.raises(UserError, match="do not stack"):
        transform_spec("int8", "bf16")
    with pytest.raises(UserError, match="runs on the CPU only"):
        check_transform("int8", "cuda")
    assert parse_transforms("fp32, int8,fp32,bf16") == ("fp32", "int8", "bf16")
    with pytest.raises(UserError, match="unknown transform 'fp16'"):
        parse_transforms("fp16")


def _sweep_config(checkpoint: str, tmp_path, transforms, rates=(0.0, 0.3)) -> SweepConfig:
    measure = MeasureConfig(
        data_dir=str(DATA_DIR), max_eval_samples=16, latency_examples=8, warmup=0, min_iterations=2, min_seconds=0.0
    )
    return SweepConfig(
        (checkpoint,),
        knobs=rates,
        batch_sizes=(4,),
        run_name="stack",
        results_dir=str(tmp_path),
        measure=measure,
        transforms=transforms,
    )


@pytest.fixture(scope="module")
def stacked(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    return sweep(_sweep_config(tiny_checkpoint, folder, ("fp32", "int8", "bf16"))), folder


def test_a_sweep_measures_each_transform_against_its_own_dense_model(stacked):
    report, _ = stacked
    by = {(r.transform, r.knob): r for r in report.rows}
    assert set(by) == {(t, k) for t in ("fp32", "int8", "bf16") for k in (0.0, 0.3)}
    fp32_dense = by["fp32", 0.0]
    for transform in ("int8", "bf16"):
        row = by[transform, 0.3]
        baseline = f"dense-{transform}"
        assert row.transform_baseline == baseline
        assert {"tiltbench", "keep-all", "dense-dynamic", baseline} <= set(row.latency)
        assert row.latency[baseline]["count"] == row.latency["tiltbench"]["count"]  # one interleaved group
        totals = {n: robust_total(Latency.from_values(v["samples"]), row.n_batches) for n, v in row.latency.items()}
        assert row.speedup_vs_dense_transform == pytest.approx(totals[baseline] / totals["tiltbench"])
        assert row.speedup_from_transform == pytest.approx(totals["dense-dynamic"] / totals[baseline])
        # transform x padding x elimination = the speedup against the fp32 headline
        parts = row.speedup_from_transform * row.speedup_from_padding * row.speedup_from_elimination
        assert parts == pytest.approx(row.speedup_vs_dense_dynamic)
        # the total drop is against HF's fp32 model, which the fp32 row at knob 0 ran (HF's own forward)
        assert row.metric_drop_vs_fp32_points == pytest.approx(100 * (fp32_dense.metric - row.metric), abs=1e-6)
        assert row.model_mb < row.dense_fp32_mb == fp32_dense.model_mb
    assert by["bf16", 0.3].model_mb == pytest.approx(by["fp32", 0.3].model_mb / 2, rel=0.05)
    assert by["fp32", 0.3].speedup_vs_dense_transform is None and by["fp32", 0.3].metric_drop_vs_fp32_points is None


def test_the_run_files_and_plot_name_the_transforms(stacked):
    _, folder = stacked
    markdown = (folder / "stack" / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| checkpoint"))
    assert "transform" in header and "vs same-transform dense" in header and "model MB" in header
    assert (folder / "stack" / "pareto.png").stat().st_size > 0
    config = json.loads((folder / "stack" / "config.json").read_text())
    assert config["transforms"] == ["fp32", "int8", "bf16"]


def test_a_run_grows_by_a_transform_without_measuring_its_rows_again(tiny_checkpoint, tmp_path):
    first = sweep(_sweep_config(tiny_checkpoint, tmp_path, ("fp32",), rates=(0.3,)))
    grown = sweep(_sweep_config(tiny_checkpoint, tmp_path, ("fp32", "int8"), rates=(0.3,)))
    assert grown.skipped == 1 and sorted(r.transform for r in grown.rows) == ["fp32", "int8"]
    kept = next(r for r in grown.rows if r.transform == "fp32")
    assert kept.latency == first.rows[0].latency  # the fp32 row was kept, not timed again


def test_offline_tune_evaluates_after_the_transform(tiny_checkpoint):
    data = DataConfig("sst2", data_dir=str(DATA_DIR), max_eval_samples=16, max_seq_len=32)
    fp32 = offline_tune(OfflineConfig(tiny_checkpoint, knobs=(0.0, 0.3), data=data))
    int8 = offline_tune(OfflineConfig(tiny_checkpoint, knobs=(0.0, 0.3), data=data, transform="int8"))
    assert int8.transform == "int8" and fp32.fp32_dense_metric is None
    assert int8.fp32_dense_metric == pytest.approx(fp32.rows[0].metric)  # evaluated before quantising
    assert [r.mean_kept_tokens for r in int8.rows] == [r.mean_kept_tokens for r in fp32.rows]


def test_check_holds_each_transform_to_its_own_profile(stacked, tmp_path):
    report, folder = stacked
    run = str(folder / "stack")
    layers = report.rows[0].layers
    row = report.rows[0]
    # profiles of the right shape, fitted to nothing in particular: what is checked is which one each row uses
    coefficients = {name: 0.01 for name in FEATURES}
    base = LatencyProfile("tiny", row.hidden, row.ffn, layers, row.heads, 1, coefficients, {}, {})
    paths = {}
    for transform in ("fp32", "int8", "bf16"):
        paths[transform] = tmp_path / f"{transform}.json"
        replace(base, transform=transform).save(paths[transform])
    with pytest.raises(UserError, match="rows under bf16, int8 but the profiles given were calibrated under fp32"):
        check(CheckConfig(run, profile=str(paths["fp32"]), tolerance=100))
    only_int8 = check(CheckConfig(run, profile=str(paths["int8"]), tolerance=100, transform="int8"))
    assert {r.transform for r in only_int8.rows} == {"int8"} and only_int8.prediction == "calibrated"
    measured = {r.knob: r.speedup_vs_dense_transform for r in report.rows if r.transform == "int8"}
    assert {r.knob: r.measured for r in only_int8.rows} == pytest.approx(measured)
    every = check(CheckConfig(run, profile=tuple(str(p) for p in paths.values()), tolerance=100))
    assert len(every.rows) == len(report.rows)
    with pytest.raises(UserError, match="two profiles for int8"):
        check(CheckConfig(run, profile=(str(paths["int8"]), str(paths["int8"])), tolerance=100))
