import numpy as np
import pytest
import torch

from tiltbench.latency import Latency, Variant, robust_total, time_interleaved


def test_latency_statistics_match_numpy():
    samples = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    lat = Latency.from_values(samples)
    for q, value in ((50, lat.p50), (90, lat.p90), (99, lat.p99)):
        assert value == pytest.approx(np.percentile(samples, q))
    assert lat.mean == pytest.approx(np.mean(samples))
    assert lat.stdev == pytest.approx(np.std(samples, ddof=1))
    assert lat.cv == pytest.approx(lat.stdev / lat.mean)
    assert lat.count == 6 and lat.unit == "ms" and lat.samples == samples


class Recorder(torch.nn.Module):
    """A stand-in forward that logs who ran on which batch (the timer is what is under test here)."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, input_ids: torch.Tensor) -> None:
        self.log.append((self.name, int(input_ids[0, 0])))


def test_interleaved_timer_same_batches_for_all_and_warmup_discarded():
    from collections import Counter

    log: list = []
    batches = [{"input_ids": torch.full((1, 2), i)} for i in range(3)]
    variants = [Variant(name, Recorder(name, log), batches) for name in ("a", "b", "c")]
    latency = time_interleaved(variants, warmup=1, min_iterations=4, min_seconds=0.0, min_rounds=1)
    # rounds come in whole Williams designs: 2 x 3 = 6 rows for 3 variants
    assert {name: lat.count for name, lat in latency.items()} == {"a": 18, "b": 18, "c": 18}
    timed = log[3:]  # the first three calls are warm-up
    for name in "abc":
        assert [b for n, b in timed if n == name] == [0, 1, 2] * 6
    for batch in range(3):
        slots = [tuple(n for n, _ in timed[i : i + 3]) for i in range(0, len(timed), 3) if timed[i][1] == batch]
        positions = Counter((name, slot.index(name)) for slot in slots for name in slot)
        assert set(positions.values()) == {2}  # every variant in every position of every batch, equally often
        follows = Counter((slot[j], slot[j + 1]) for slot in slots for j in range(2))
        assert len(follows) == 6 and set(follows.values()) == {2}  # and right after every other, equally often


def test_williams_orders_balance_carryover():
    from collections import Counter

    from tiltbench.latency import williams_orders

    for n in (2, 3, 4, 5):
        rows = williams_orders(n)
        pairs = Counter((row[i], row[i + 1]) for row in rows for i in range(n - 1))
        assert len(pairs) == n * (n - 1) and len(set(pairs.values())) == 1
        assert all(sorted(row) == list(range(n)) for row in rows)


def test_min_rounds_and_robust_total():
    log: list = []
    batches = [{"input_ids": torch.full((1, 2), i)} for i in range(2)]
    latency = time_interleaved(
        [Variant("a", Recorder("a", log), batches)], warmup=0, min_iterations=1, min_seconds=0.0, min_rounds=3
    )
    assert latency["a"].count == 6
    # round-major samples of 2 batches x 3 rounds; one outlier (100) in batch 0 does not move its median
    lat = Latency.from_values([1.0, 10.0, 100.0, 11.0, 2.0, 12.0])
    assert robust_total(lat, 2) == 2.0 + 11.0


def test_a_probe_that_does_not_pace_gets_every_round_but_does_not_prolong_timing(monkeypatch):
    import tiltbench.latency as latency_module

    log: list = []
    batches = [{"input_ids": torch.zeros((1, 2), dtype=torch.long)}]
    model, probe = Recorder("model", log), Recorder("probe", log)
    # a fixed clock: the model's forward takes 4 ms, the probe's 0.5 ms
    monkeypatch.setattr(latency_module, "time_forward", lambda m, batch: 4.0 if m is model else 0.5)
    timed = time_interleaved(
        [Variant("model", model, batches), Variant("probe", probe, batches, paces=False)],
        warmup=0, min_iterations=1, min_seconds=0.02, min_rounds=1,
    )  # fmt: skip
    assert timed["probe"].count == timed["model"].count == 6  # 20 ms of 4 ms forwards, a whole design of 2 rounds
    paced = time_interleaved(
        [Variant("model", model, batches), Variant("probe", probe, batches)],
        warmup=0, min_iterations=1, min_seconds=0.02, min_rounds=1,
    )  # fmt: skip
    assert paced["model"].count == 40  # a pacing probe holds every variant to its own 20 ms: 40 rounds


def test_reported_samples_are_kept_to_the_microsecond():
    latency = Latency.from_values([1.23456789, 250.0004])
    assert latency.to_dict()["samples"] == [1.235, 250.0]  # ms: timer noise below a microsecond is not written
    assert latency.total == 1.235 + 250.0  # and the statistics are those of the samples written
