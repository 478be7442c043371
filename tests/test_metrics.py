"""tiltbench.metrics.compute_metrics against values small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tiltbench.data import TASKS
from tiltbench.metrics import compute_metrics


def one_hot_logits(predicted: list[int], num_classes: int = 2) -> np.ndarray:
    """Logits whose argmax is `predicted` (with a distracting non-zero runner-up)."""
    logits = np.full((len(predicted), num_classes), 0.25, dtype=np.float32)
    logits[np.arange(len(predicted)), predicted] = 2.0
    return logits


def test_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [-1.0, 1.0]])  # predicts 0, 1, 0, 1
    metrics = compute_metrics(TASKS["sst2"].info, logits, np.array([0, 1, 1, 1]))
    assert metrics == {"accuracy": 0.75}
    assert type(metrics["accuracy"]) is float


def test_mrpc_f1_and_accuracy():
    # predicted 1 1 0 1 vs labels 1 0 0 1: TP 2, FP 1, FN 0 -> precision 2/3, recall 1, F1 0.8; 3 of 4 right.
    metrics = compute_metrics(TASKS["mrpc"].info, one_hot_logits([1, 1, 0, 1]), np.array([1, 0, 0, 1]))
    assert list(metrics) == ["f1", "accuracy"]  # the primary metric first
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["accuracy"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ([1, 1, 0, 0], 1.0),
        ([0, 0, 1, 1], -1.0),
        # TP 2, FP 1, TN 1, FN 0: (2*1 - 1*0) / sqrt(3 * 2 * 2 * 1)
        ([1, 1, 1, 0], 2 / math.sqrt(12)),
    ],
)
def test_cola_matthews(predicted, expected):
    metrics = compute_metrics(TASKS["cola"].info, one_hot_logits(predicted), np.array([1, 1, 0, 0]))
    assert list(metrics) == ["matthews_correlation"]
    assert metrics["matthews_correlation"] == pytest.approx(expected)


def test_stsb_perfect_correlation():
    labels = np.array([0.0, 1.2, 2.5, 3.1, 5.0])
    metrics = compute_metrics(TASKS["stsb"].info, (2 * labels + 1).reshape(-1, 1), labels)
    assert set(metrics) == {"pearson", "spearman"}
    assert metrics["pearson"] == pytest.approx(1.0)
    assert metrics["spearman"] == pytest.approx(1.0)


def test_stsb_monotone_but_not_linear():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    metrics = compute_metrics(TASKS["stsb"].info, (labels**3).reshape(-1, 1), labels)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert 0.9 < metrics["pearson"] < 1.0


def test_stsb_anticorrelated():
    labels = np.array([0.0, 1.0, 2.0])
    metrics = compute_metrics(TASKS["stsb"].info, -labels.reshape(-1, 1), labels)
    assert metrics["pearson"] == pytest.approx(-1.0)
    assert metrics["spearman"] == pytest.approx(-1.0)
