import pytest

from tiltbench import ModelDims, Schedule, UserError, predict_speedup, tilt_rate_for_speedup
from tiltbench.speedup import encoder_macs, layer_macs

MINILM = ModelDims(384, 1536, 6)


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
