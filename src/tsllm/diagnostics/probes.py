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
    """The probe's stratified k-fold accuracy within TRAIN (k capped by the rarest class).

    A class with one TRAIN series cannot be both held out and fit (DiatomSizeReduction has one), so such
    classes sit out: the score is over the others, the same series for every layer, which is what a choice
    between layers needs. NaN when fewer than two classes are left.
    """
    classes, counts = np.unique(y, return_counts=True)
    foldable = counts >= 2
    if foldable.sum() < 2:
        return float("nan")
    kept = np.isin(y, classes[foldable])
    k = min(folds, int(counts[foldable].min()))
    return float(cross_val_score(_probe(), x[kept], y[kept], cv=StratifiedKFold(k, shuffle=True, random_state=0)).mean())


def layer_chosen_without_test(train_layers: list[np.ndarray], train_y: np.ndarray,
                              val_layers: list[np.ndarray] | None = None,
                              val_y: np.ndarray | None = None) -> tuple[int | None, list[float], str]:
    """(the layer whose probe scores best without TEST, every layer's score, how it was scored).

    With a validation split, probes fit on TRAIN are scored on it: series the encoder never trained on.
    Without one (train.selection=min_train_loss trains on all of TRAIN), by k-fold CV within TRAIN, which
    the encoder has fit, so late layers tend to tie near 1.0; ties go to the shallowest layer. Either way
    TEST plays no part, so the chosen layer's TEST probe is a result, where the best layer on TEST is a bound.
    """
    if val_layers is not None:
        scores = [probe_accuracy(a, train_y, v, val_y) for a, v in zip(train_layers, val_layers, strict=True)]
        how = "validation"
    else:
        scores, how = [cv_accuracy(x, train_y) for x in train_layers], f"{CV_FOLDS}-fold CV within TRAIN"
    return (None if np.all(np.isnan(scores)) else int(np.nanargmax(scores))), scores, how


def layer_probes(train_layers: list[np.ndarray], train_y: np.ndarray, test_layers: list[np.ndarray],
                 test_y: np.ndarray) -> list[float]:
    """One probe accuracy per layer: lists of [N, H] features, one per layer (embeddings = layer 0)."""
    if len(train_layers) != len(test_layers):
        raise ValueError(f"{len(train_layers)} TRAIN layers vs {len(test_layers)} TEST layers")
    return [probe_accuracy(a, train_y, b, test_y) for a, b in zip(train_layers, test_layers, strict=True)]
