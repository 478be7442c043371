import json

import numpy as np
import pytest
import torch
from conftest import random_batch, tiny_bert

from tiltbench import Schedule, UserError, patch, predict_speedup, tilt_rate_for_speedup
from tiltbench.speed_model import (
    FEATURES,
    LatencyProfile,
    ModelDims,
    batch_work,
    calibrated_speedup,
    encoder_macs,
    features,
    fit_coefficients,
    fit_profile_coefficients,
    layer_macs,
    predict_latency,
    tilt_rate_for_calibrated_speedup,
)

MINILM = ModelDims(384, 1536, 6)
DIMS = MINILM

# ---- the analytic FLOP model


def test_layer_macs_by_hand():
    # 4*m*h^2 + 2*m^2*h + 2*n*h*f with m=10, n=5, h=4, f=8
    assert layer_macs(10, 5, ModelDims(4, 8, 1)) == 4 * 10 * 16 + 2 * 100 * 4 + 2 * 5 * 4 * 8


def test_dense_minilm_128_gflops():
    # methods.md §9.2: MiniLM-L6 at n=128 is 2.87 encoder GFLOPs (2 x MACs)
    macs = encoder_macs([128] * 7, MINILM)
    assert macs == 1_434_451_968
    assert predict_speedup(MINILM, Schedule(6, 0.0), [128]).predicted_speedup == 1.0


def test_matches_methods_reference_table():
    # methods.md §9.4: MiniLM-L6, N=128, geometric rho=0.8 (tilt 0.2) -> 1.89x, rho=0.7 -> 2.56x
    assert predict_speedup(MINILM, Schedule(6, 0.2), [128]).predicted_speedup == pytest.approx(1.89, abs=0.01)
    assert predict_speedup(MINILM, Schedule(6, 0.3), [128]).predicted_speedup == pytest.approx(2.56, abs=0.01)


def test_dataset_prediction_weights_each_length():
    lengths = [10, 10, 50]
    both = predict_speedup(MINILM, Schedule(6, 0.3), lengths)
    dense = sum(encoder_macs([n] * 7, MINILM) for n in lengths)
    pruned = sum(encoder_macs(Schedule(6, 0.3).counts(n), MINILM) for n in lengths)
    assert (both.macs_dense, both.macs) == (dense, pruned)
    assert both.predicted_speedup == pytest.approx(dense / pruned)


@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
def test_inverse_round_trip(target):
    rate = tilt_rate_for_speedup(MINILM, target, [128])
    assert predict_speedup(MINILM, Schedule(6, rate), [128]).predicted_speedup >= target
    smaller = max(rate - 1e-4, 0.0)
    assert predict_speedup(MINILM, Schedule(6, smaller), [128]).predicted_speedup < target


def test_unreachable_target_is_user_error():
    with pytest.raises(UserError, match="out of reach"):
        tilt_rate_for_speedup(MINILM, 100.0, [16])
    assert tilt_rate_for_speedup(MINILM, 1.0, [16]) == 0.0


# ---- the calibrated latency model


@pytest.mark.parametrize("lengths", [[20, 9], [30, 30, 4], [5], [12, 3, 3, 40]])
def test_batch_work_mirrors_the_patched_model(lengths):
    model = patch(tiny_bert(layers=4), tilt_rate=0.3)
    with torch.inference_mode():
        model(**random_batch(lengths))
    assert list(batch_work(lengths, Schedule(4, 0.3)).widths) == model._tiltbench.widths


def test_features_by_hand():
    dims = ModelDims(4, 8, 2)
    work = batch_work([6, 3], Schedule(2, 0.5))  # counts [6,3,2] and [3,2,1]: widths 6 -> 3 -> 2
    assert work.widths == (6, 3, 2) and work.eliminating == (True, True)
    x = features(work, dims, heads=2)
    # every Linear on the real tokens alone (patch.py's per_token): 6 + 3 entering layer 1, 3 + 2 leaving it, 2 + 1
    lin = (4 * (6 + 3) * 16 + 2 * (3 + 2) * 4 * 8) + (4 * (3 + 2) * 16 + 2 * (2 + 1) * 4 * 8)
    # both eliminating layers are ragged (the second row is padding-shorter): the general path, counted twice
    assert x.tolist() == [lin, 2 * 2 * (36 + 9) * 4, 2 * (6 + 3), 2 * 2 * (36 + 9), 2, 0, 1, 2]
    assert features(work, dims, heads=2, large_batch=8)[5] == (2 * 6 - 8) + 0  # 12 tokens, then 6
    dense = features(batch_work([6, 3], None), dims, heads=2)
    assert dense[3] == dense[4] == 0 and dense[2] == 2 * 2 * 6  # padded width 6 in both layers
    assert dense[0] == 2 * 2 * (4 * 6 * 16 + 2 * 6 * 4 * 8)  # HF's dense layers run their Linears on the padding


def test_only_unpadded_planned_single_chunk_layers_take_the_short_path(monkeypatch):
    dims = ModelDims(4, 8, 2)
    ragged = features(batch_work([6, 3], Schedule(2, 0.5)), dims, heads=2)
    even = features(batch_work([6, 6], Schedule(2, 0.5)), dims, heads=2)  # no padding: both layers short
    one = features(batch_work([6], Schedule(2, 0.5)), dims, heads=2)
    assert ragged[7] == 2 and even[7] == 0 and one[7] == 0
    assert even[4] == one[4] == 2  # every eliminating layer still pays g
    decided = batch_work([6, 6], None, counts=[[6, 3, 2], [6, 3, 2]], planned=False)  # an adaptive method's
    assert features(decided, dims, heads=2)[7] == 2
    monkeypatch.setattr("tiltbench.eliminate.CHUNK_BYTES", 1)  # one row per chunk: two chunks, the general path
    assert features(batch_work([6, 6], Schedule(2, 0.5)), dims, heads=2)[7] == 2


def test_eliminating_layers_count_no_padding_beyond_each_chunk(monkeypatch):
    monkeypatch.setattr("tiltbench.eliminate.CHUNK_BYTES", 1)  # one row per chunk, as at IMDB lengths
    work = batch_work([6, 3], Schedule(2, 0.5))
    assert [work.attention_area(layer, heads=2) for layer in (0, 1)] == [36 + 9, 9 + 4]
    assert batch_work([6, 3], None).attention_area(0, heads=2) == 2 * 36  # dense sdpa computes the padding


def _profile(coefficients: dict[str, float]) -> LatencyProfile:
    return LatencyProfile("minilm", 384, 1536, 6, 12, 2, coefficients, {}, {})


def test_fit_recovers_known_coefficients():
    truth = {
        "computed_linear_macs": 1e-8,
        "quadratic_macs": 3e-8,
        "tokens": 1e-4,
        "eliminated_probs": 2e-7,
        "eliminating_layers": 0.05,
        "large_batch_tokens": 0.0,
        "constant": 1.5,
        "ragged_eliminating_layers": 0.08,
    }
    rng = np.random.default_rng(0)
    works = [
        batch_work([int(n) for n in rng.integers(8, 256, size=b)], Schedule(6, r) if r else None)
        for b in (1, 4, 16)
        for r in (0, 0.1, 0.3)
        for _ in range(4)
    ]
    rows = np.array([features(w, DIMS, 12) for w in works])
    times = rows @ np.array([truth[f] for f in FEATURES])
    fitted, predicted = fit_coefficients(rows, times)
    assert np.allclose(predicted, times, rtol=1e-6)


def test_speedup_prediction_and_inverse():
    profile = _profile(
        {
            "computed_linear_macs": 1e-8,
            "quadratic_macs": 1e-8,
            "tokens": 0.0,
            "eliminated_probs": 1e-8,
            "eliminating_layers": 0.1,
            "large_batch_tokens": 0.0,
            "constant": 2.0,
            "ragged_eliminating_layers": 0.1,
        }
    )
    lengths = [40, 64, 20, 33] * 8
    dense, tilted = predict_latency(profile, lengths, 8, Schedule(6, 0.0))
    assert dense == tilted  # rate 0 is HF's forward
    assert (
        calibrated_speedup(profile, lengths, 8, Schedule(6, 0.3))
        > calibrated_speedup(profile, lengths, 8, Schedule(6, 0.1))
        > 1
    )
    rate = tilt_rate_for_calibrated_speedup(profile, 1.5, lengths, 8)
    assert calibrated_speedup(profile, lengths, 8, Schedule(6, rate)) >= 1.5
    assert calibrated_speedup(profile, lengths, 8, Schedule(6, rate - 0.002)) < 1.5
    with pytest.raises(UserError, match="out of reach"):
        tilt_rate_for_calibrated_speedup(profile, 50.0, lengths, 8)


def test_profile_round_trip_and_errors(tmp_path):
    profile = _profile(dict.fromkeys(FEATURES, 1.0))
    profile.save(tmp_path / "p.json")
    assert LatencyProfile.load(tmp_path / "p.json") == profile
    with pytest.raises(UserError, match="does not exist"):
        LatencyProfile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a tiltbench latency profile"):
        LatencyProfile.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="calibrate this model"):
        profile.check_dims(ModelDims(768, 3072, 12), 12)


def test_calibration_picks_the_large_batch_threshold_from_its_own_fit():
    rng = np.random.default_rng(1)
    works = [
        batch_work([int(n) for n in rng.integers(8, 512, size=b)], Schedule(6, r) if r else None)
        for b in (1, 8, 16, 32)
        for r in (0, 0.2)
        for _ in range(6)
    ]
    truth = np.array([1e-8, 3e-8, 1e-4, 2e-7, 0.05, 2e-2, 1.5, 0.08])
    times = [features(w, DIMS, 12, 6144) @ truth for w in works]
    coefficients, fitted, threshold = fit_profile_coefficients(works, times, DIMS, 12, 16384)
    assert threshold == 6144 and np.allclose(fitted, times, rtol=1e-6)


def test_profile_from_an_older_model_is_refused(tmp_path):
    old = _profile(dict.fromkeys(FEATURES, 1.0))
    old.save(tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    del data["coefficients"]["large_batch_tokens"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="calibrate"):
        LatencyProfile.load(tmp_path / "p.json")
