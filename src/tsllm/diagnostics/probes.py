"""Layer-wise linear probes: where in the LLM the class information lives."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Logistic regression fit on TRAIN features, scored on TEST once."""
    if len(np.unique(train_y)) < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def layer_probes(train_layers: list[np.ndarray], train_y: np.ndarray, test_layers: list[np.ndarray],
                 test_y: np.ndarray) -> list[float]:
    """One probe accuracy per layer: lists of [N, H] features, one per layer (embeddings = layer 0)."""
    if len(train_layers) != len(test_layers):
        raise ValueError(f"{len(train_layers)} TRAIN layers vs {len(test_layers)} TEST layers")
    return [probe_accuracy(a, train_y, b, test_y) for a, b in zip(train_layers, test_layers, strict=True)]
