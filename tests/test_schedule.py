import math

import pytest

from tiltbench import Schedule, UserError, parse_grid, parse_schedule


def test_geometric_counts_follow_formula():
    schedule = Schedule(6, 0.2)
    n0 = 64
    expected = [n0] + [max(1, math.ceil(n0 * 0.8**layer)) for layer in range(1, 7)]
    assert schedule.counts(n0) == expected == [64, 52, 41, 33, 27, 21, 17]


def test_linear_and_list_shapes():
    assert Schedule(4, 0.5, "linear").counts(100) == [100, 88, 75, 63, 50]
    assert Schedule(3, 0.0, "list", (10, 6, 2)).counts(8) == [8, 8, 6, 2]  # capped at the real length


def test_float_noise_does_not_round_up():
    # 100 * 0.9 is 90.00000000000001 in floating point
    assert Schedule(1, 0.1).counts(100) == [100, 90]


def test_min_tokens_and_monotone():
    counts = Schedule(6, 0.9, min_tokens=3).counts(10)
    assert counts == [10, 3, 3, 3, 3, 3, 3]
    assert Schedule(6, 0.5, min_tokens=20).counts(10) == [10] * 7  # never more than the example has


def test_identity_only_at_zero():
    assert Schedule(6, 0.0).is_identity
    assert not Schedule(6, 0.01).is_identity
    assert not Schedule(2, 0.0, "list", (4, 4)).is_identity


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan")])
def test_rate_outside_range_is_user_error(rate):
    with pytest.raises(UserError, match="tilt rate"):
        Schedule(6, rate)


@pytest.mark.parametrize("keep", [(4, 5), (4,), (0, 0)])
def test_bad_keep_list_is_user_error(keep):
    with pytest.raises(UserError):
        Schedule(2, 0.0, "list", keep)


def test_parse_schedule_forms():
    assert parse_schedule(6, 0.2) == Schedule(6, 0.2)
    assert parse_schedule(6, "0.3:linear") == Schedule(6, 0.3, "linear")
    assert parse_schedule(3, "8,4,2").keep == (8, 4, 2)
    assert parse_schedule(3, [8, 4, 2]).shape == "list"
    with pytest.raises(UserError):
        parse_schedule(6, "fast")
    with pytest.raises(UserError, match="shape"):
        parse_schedule(6, "0.2:zigzag")


def test_parse_grid():
    assert parse_grid("0:0.5:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert parse_grid("0,0.25") == [0.0, 0.25]
    assert parse_grid("0,1.25") == [0.0, 1.25]  # a grid is any method's knob: each method checks its own range
    for bad in ("", ",", "0:1:0", "a,b", "0.5,-1", "0,inf", "0,nan"):
        with pytest.raises(UserError):
            parse_grid(bad)
