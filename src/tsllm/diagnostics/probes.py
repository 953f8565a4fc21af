"""Layer-wise linear probes: where in the LLM the class information lives."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

CV_FOLDS = 5


def _probe() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Logistic regression fit on TRAIN features, scored on TEST once."""
    if len(np.unique(train_y)) < 2:
        return float("nan")
    return float(_probe().fit(train_x, train_y).score(test_x, test_y))


def cv_accuracy(x: np.ndarray, y: np.ndarray, folds: int = CV_FOLDS) -> float:
    """The probe's stratified k-fold accuracy within TRAIN (k capped by the rarest class; NaN below 2 folds)."""
    _, counts = np.unique(y, return_counts=True)
    k = min(folds, int(counts.min())) if len(counts) >= 2 else 0
    if k < 2:
        return float("nan")
    return float(cross_val_score(_probe(), x, y, cv=StratifiedKFold(k, shuffle=True, random_state=0)).mean())


def layer_chosen_on_train(train_layers: list[np.ndarray], train_y: np.ndarray) -> tuple[int | None, list[float]]:
    """The layer whose probe cross-validates best within TRAIN (the shallowest on ties), and every layer's score.

    TEST plays no part, so the chosen layer's TEST probe is a result, where the best layer on TEST is a bound.
    """
    scores = [cv_accuracy(x, train_y) for x in train_layers]
    return (None if np.all(np.isnan(scores)) else int(np.nanargmax(scores))), scores


def layer_probes(train_layers: list[np.ndarray], train_y: np.ndarray, test_layers: list[np.ndarray],
                 test_y: np.ndarray) -> list[float]:
    """One probe accuracy per layer: lists of [N, H] features, one per layer (embeddings = layer 0)."""
    if len(train_layers) != len(test_layers):
        raise ValueError(f"{len(train_layers)} TRAIN layers vs {len(test_layers)} TEST layers")
    return [probe_accuracy(a, train_y, b, test_y) for a, b in zip(train_layers, test_layers, strict=True)]
