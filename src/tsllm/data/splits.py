"""From raw archive files to ready-to-train splits: labels, missing values, validation split, scaling."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from tsllm.data.formats import RawSplit, read_raw
from tsllm.data.names import DataError

NORMALISATIONS = ("znorm", "minmax", "study_global_minmax", "none")
# Normalisations whose statistics see TEST, with the note that records and tables carry for them.
LEAKS_TEST = {"study_global_minmax": "normalise=study_global_minmax: min/max over TRAIN ∪ TEST"}
MISSING_STRATEGIES = ("interpolate", "error")
_EPS = 1e-8  # below this a std/range is treated as zero: scale by 1 instead of blowing up


@dataclass
class Split:
    """Model-ready split."""

    x: np.ndarray  # float32 [N, C, T]
    y: np.ndarray  # int64 [N], values 0..K-1


@dataclass
class DatasetSplits:
    """TRAIN (minus validation), validation, TEST and provenance of one dataset."""

    name: str
    train: Split
    val: Split | None  # None when a stratified split is impossible (selection falls back to last epoch)
    test: Split
    classes: list[str]  # original label strings, index = class id
    meta: dict

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def length(self) -> int:
        return int(self.train.x.shape[2])


# --------------------------------------------------------------------------- labels


def sort_labels(labels: set[str] | list[str]) -> list[str]:
    """Unique labels sorted numerically when all are numeric, else lexically."""
    unique = set(labels)
    try:
        return sorted(unique, key=float)
    except ValueError:
        return sorted(unique)


def encode_labels(name: str, train: RawSplit, test: RawSplit) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Classes (sorted TRAIN labels) and int64 ids for TRAIN and TEST."""
    classes = sort_labels(train.labels.tolist())
    if len(classes) < 2:
        raise DataError(
            f"dataset {name!r}: TRAIN ({train.path}) has {len(classes)} class(es) {classes}; need at least 2"
        )
    index = {label: i for i, label in enumerate(classes)}
    unseen = [i for i, label in enumerate(test.labels) if label not in index]
    if unseen:
        row = unseen[0]
        raise DataError(
            f"dataset {name!r}: TEST label {str(test.labels[row])!r} ({test.where(row)}) does not occur in TRAIN; "
            f"TRAIN classes: {classes}"
        )
    y_train = np.fromiter((index[s] for s in train.labels), dtype=np.int64, count=len(train.labels))
    y_test = np.fromiter((index[s] for s in test.labels), dtype=np.int64, count=len(test.labels))
    return classes, y_train, y_test


# --------------------------------------------------------------------------- missing values


def fill_missing(name: str, split_name: str, raw: RawSplit, strategy: str) -> tuple[np.ndarray, int]:
    """Return a copy of ``raw.x`` without NaN, and how many values were filled.

    ``interpolate``: interior gaps are linearly interpolated and leading/trailing gaps
    (including unequal-length padding) take the nearest valid value. ``error``: any NaN
    is an error. Infinite values are always an error.
    """
    x = raw.x.copy()
    inf_rows = np.flatnonzero(np.isinf(x).any(axis=(1, 2)))
    if inf_rows.size:
        row = int(inf_rows[0])
        raise DataError(f"dataset {name!r} {split_name}: infinite value in row {row} ({raw.where(row)})")
    nan = np.isnan(x)
    if not nan.any():
        return x, 0
    if strategy == "error":
        row = int(np.flatnonzero(nan.any(axis=(1, 2)))[0])
        raise DataError(
            f"dataset {name!r} {split_name}: missing value or unequal-length padding in row {row} "
            f"({raw.where(row)}); use missing='interpolate' to fill"
        )
    steps = np.arange(x.shape[2])
    # Only series that actually have gaps are touched, which keeps large clean datasets fast.
    for i, c in zip(*np.nonzero(nan.any(axis=2)), strict=True):
        valid = ~nan[i, c]
        if not valid.any():
            raise DataError(
                f"dataset {name!r} {split_name}: row {i} channel {c} has no values at all ({raw.where(i)})"
            )
        # np.interp holds the end values beyond the first/last valid step: exactly the edge rule.
        x[i, c] = np.interp(steps, steps[valid], x[i, c, valid])
    return x, int(nan.sum())


# --------------------------------------------------------------------------- validation split


def _allocate(counts: np.ndarray, n_val: int) -> np.ndarray:
    """Validation examples per class: proportional to ``counts``, each in [1, count - 1], summing to ``n_val``.

    Largest-remainder apportionment of the ideal shares ``n_val * count / N``, with the
    bounds enforced first and the total then corrected one example at a time: classes
    furthest below their ideal share gain first, those furthest above lose first.
    Ties go to the lower class id so the result is deterministic.
    """
    ideal = n_val * counts / counts.sum()
    low, high = np.ones_like(counts), counts - 1
    alloc = np.clip(np.floor(ideal).astype(np.int64), low, high)
    while alloc.sum() < n_val:
        room = np.flatnonzero(alloc < high)
        alloc[room[np.argmax(ideal[room] - alloc[room])]] += 1
    while alloc.sum() > n_val:
        room = np.flatnonzero(alloc > low)
        alloc[room[np.argmin(ideal[room] - alloc[room])]] -= 1
    return alloc


def stratified_split(
    y: np.ndarray, classes: list[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """Sorted (train, val) indices of a seeded stratified split, or the reason none is possible.

    ``n_val = max(K, round_half_up(val_fraction * N))``; every class gets at least one
    validation example and keeps at least one training example.
    """
    num_classes = len(classes)
    counts = np.bincount(y, minlength=num_classes)
    n = len(y)
    if val_fraction == 0:
        return "val_fraction is 0"
    if counts.min() < 2:
        rare = int(np.argmin(counts))
        return f"class {classes[rare]!r} has {int(counts[rare])} training example(s); need at least 2"
    n_val = max(num_classes, math.floor(val_fraction * n + 0.5))
    if n - n_val < num_classes:
        return f"{n} training examples cannot give {n_val} validation and keep one per class for training"
    rng = np.random.default_rng(seed)
    val_parts = [
        rng.permutation(np.flatnonzero(y == k))[:take] for k, take in enumerate(_allocate(counts, n_val))
    ]
    val = np.sort(np.concatenate(val_parts))
    train = np.setdiff1d(np.arange(n), val)
    return train, val


# --------------------------------------------------------------------------- normalisation


def normalise_splits(method: str, train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale ``train`` and ``others``; any statistic shared across series comes from ``train`` only.

    The one exception is the study's ``study_global_minmax``: a single min and max over
    *every* array given (TRAIN ∪ TEST when called by :func:`load_ucr`), which leaks TEST
    statistics and is labelled so by :data:`LEAKS_TEST`.
    """
    arrays = [train, *others]
    if method == "none":
        return arrays
    if method == "znorm":
        out = []
        for a in arrays:
            # Per series and channel, so no information crosses series or splits.
            std = a.std(axis=2, keepdims=True)
            out.append((a - a.mean(axis=2, keepdims=True)) / np.where(std < _EPS, 1.0, std))
        return out
    if method == "minmax":
        lo = train.min(axis=(0, 2), keepdims=True)
        span = train.max(axis=(0, 2), keepdims=True) - lo
        span = np.where(span < _EPS, 1.0, span)
        return [(a - lo) / span for a in arrays]
    if method == "study_global_minmax":
        lo = min(float(a.min()) for a in arrays)
        span = max(float(a.max()) for a in arrays) - lo
        if span < _EPS:
            # The study divides by max - min; a constant dataset has no scale to reproduce.
            raise DataError(
                f"normalise=study_global_minmax: every TRAIN and TEST value is {lo:g} (max == min); "
                "use normalise=znorm, minmax or none"
            )
        return [(a - lo) / span for a in arrays]
    raise DataError(f"unknown normalise={method!r}; expected one of {', '.join(NORMALISATIONS)}")


# --------------------------------------------------------------------------- top level


def load_ucr(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    normalise: str = "znorm",
    val_fraction: float = 0.2,
    seed: int = 0,
    missing: str = "interpolate",
) -> DatasetSplits:
    """Load a UCR/UEA classification dataset as model-ready train/val/test splits.

    ``root=None`` uses the copies shipped with sktime, then the offline archive packages
    (``meta["source"]`` says which). The validation split is carved from TRAIN only
    (stratified, seeded); ``val`` is ``None`` when that is impossible, with the reason in
    ``meta["val_strategy"]``. Every normalisation but the study's ``study_global_minmax``
    uses TRAIN statistics only; that one sets ``meta["leaks_test"]``.
    """
    if normalise not in NORMALISATIONS:
        raise DataError(f"unknown normalise={normalise!r}; expected one of {', '.join(NORMALISATIONS)}")
    if missing not in MISSING_STRATEGIES:
        raise DataError(f"unknown missing={missing!r}; expected one of {', '.join(MISSING_STRATEGIES)}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")

    raw_train, raw_test, source = read_raw(name, root)
    classes, y_train, y_test = encode_labels(name, raw_train, raw_test)
    x_train, filled_train = fill_missing(name, "TRAIN", raw_train, missing)
    x_test, filled_test = fill_missing(name, "TEST", raw_test, missing)
    assert np.isfinite(x_train).all() and np.isfinite(x_test).all()

    split = stratified_split(y_train, classes, val_fraction, seed)
    if isinstance(split, str):
        val_strategy = f"none: {split}"
        x_fit, y_fit, x_val, y_val = x_train, y_train, None, None
    else:
        val_strategy = "stratified"
        train_idx, val_idx = split
        x_fit, y_fit, x_val, y_val = (
            x_train[train_idx],
            y_train[train_idx],
            x_train[val_idx],
            y_train[val_idx],
        )

    try:
        scaled = normalise_splits(normalise, x_fit, x_test, *([] if x_val is None else [x_val]))
    except DataError as exc:
        raise DataError(f"dataset {name!r}: {exc}") from None
    train = Split(scaled[0].astype(np.float32), y_fit)
    test = Split(scaled[1].astype(np.float32), y_test)
    val = None if x_val is None else Split(scaled[2].astype(np.float32), y_val)

    meta = {
        "name": name,
        **source,
        "n_channels": int(x_train.shape[1]),
        "length": int(x_train.shape[2]),
        "n_train": len(train.y),
        "n_val": 0 if val is None else len(val.y),
        "n_test": len(test.y),
        "num_classes": len(classes),
        "normalise": normalise,
        # None, or what saw TEST statistics: records and result tables show it beside the run.
        "leaks_test": LEAKS_TEST.get(normalise),
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "val_strategy": val_strategy,
        "missing": {"strategy": missing, "filled_train": filled_train, "filled_test": filled_test},
    }
    # Either spelling of a name may be asked for; the splits carry the canonical (2018) one.
    return DatasetSplits(name=meta["name"], train=train, val=val, test=test, classes=classes, meta=meta)
