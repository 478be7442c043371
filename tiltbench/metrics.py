"""Task metrics with scikit-learn and scipy (not hand-written; `evaluate` fetches metrics from the Hub)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tiltbench.data import TaskInfo

METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearman")


def compute_metrics(info: TaskInfo, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics by name (fractions, not percent), from logits [N, C] (regression: [N, 1])."""
    if info.regression:
        scores = logits.reshape(-1)
        return {"pearson": float(pearsonr(scores, labels)[0]), "spearman": float(spearmanr(scores, labels)[0])}
    predicted = logits.argmax(-1)
    values = {
        "accuracy": lambda: accuracy_score(labels, predicted),
        "f1": lambda: f1_score(labels, predicted),
        "matthews_correlation": lambda: matthews_corrcoef(labels, predicted),
    }
    return {name: float(values[name]()) for name in info.metrics}
