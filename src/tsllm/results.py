"""Results layer: run records -> one tidy table -> the study's tables, report and plots.

Every number comes from ``record.json`` files (never from logs). Accuracies are always averaged in two
stages, seeds within a dataset first and then datasets, so a dataset with more finished seeds does not
weigh more than one with fewer. One helper (:func:`dataset_means` / :func:`aggregate`) does this for
every table.

CLI::

    python -m tsllm.results results/runs/standalone results/runs/hybrid --out results/tables \
        [--reference] [--protocol val_selected|last_epoch|study_best_test]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

RECORD = "record.json"
PROTOCOLS: dict[str, str] = {
    "val_selected": "test_acc",
    "last_epoch": "test_acc_last_epoch",
    "study_best_test": "study_best_test_acc",
}
OPTIMISTIC_LABEL = "optimistic: selected on TEST (the study's protocol)"
PROTOCOL_LABELS: dict[str, str] = {
    "val_selected": "test accuracy of the epoch selected on validation",
    "last_epoch": "test accuracy after the last epoch",
    "study_best_test": OPTIMISTIC_LABEL,
}
ENCODER_ORDER = ("mlp", "cnn", "inception", "resnet", "transformer")
MODE_ORDER = ("standalone", "hybrid", "lora")
BASELINE_ARM = "standalone"
# Below this many paired datasets a signed-rank p-value is too coarse to mean anything (n=5 is the
# smallest n whose exact two-sided p can drop to 0.0625).
MIN_PAIRED = 5
DEFAULT_METHODS = ("MLP", "FCN", "ResNet", "InceptionTime", "ROCKET")
DEFAULT_ARCHIVE = "UCR2018-128"
REFERENCE_CSV = Path("results") / "reference" / "ucr_published_accuracy.csv"

# Scalar record keys copied verbatim into the tidy table, in this column order.
SCALAR_KEYS = (
    "status", "config_hash", "run_dir", "seed", "dataset", "encoder", "mode", "llm", "lr", "num_tokens",
    "num_kernels", "protocol", "selection", "best_epoch", "epochs_run", "val_acc", "val_loss", "test_acc",
    "test_loss", "test_acc_last_epoch", "train_acc_last_epoch", "study_best_test_acc", "stopped_early",
    "resumed_from_epoch", "seconds", "wall_seconds", "error",
)
DATA_KEYS = ("n_train", "n_val", "n_test", "num_classes", "sha256")
# Settings a table may pool when its cells do not split by them (named when that happens).
POOLABLE = ("sweep", "llm", "lr", "num_tokens", "num_kernels", "epochs", "protocol")
# Integer columns that may hold nulls (num_kernels outside inception, epochs of a running run).
INT_COLUMNS = ("seed", "num_tokens", "num_kernels", "best_epoch", "epochs_run", "resumed_from_epoch", "epochs",
               "trainable_params", "frozen_params", *(f"data_{k}" for k in DATA_KEYS if k != "sha256"))
TIDY_COLUMNS = (
    *SCALAR_KEYS, "sweep", "epochs", "trainable_params", "frozen_params", "git_sha", "device",
    *(f"data_{k}" for k in DATA_KEYS), "path",
)


# ----------------------------------------------------------------------------------------------- paths

def repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding pyproject.toml.

    Falls back to the checkout this module lives in, so notebooks run from any folder still find it.
    """
    for base in (Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            if (folder / "pyproject.toml").is_file():
                return folder
    raise FileNotFoundError(f"no pyproject.toml at or above {start or Path.cwd()}")


def tidy_path() -> Path:
    """The tidy table notebooks read: ``$TSLLM_TIDY``, else ``results/tidy.csv`` under the repo root.

    When that default is missing but the CLI's default output (``results/tables/tidy.csv``) exists,
    that one is used, so ``python -m tsllm.results ...`` followed by the notebooks just works.
    """
    if os.environ.get("TSLLM_TIDY"):
        return Path(os.environ["TSLLM_TIDY"]).expanduser()
    root = repo_root()
    default = root / "results" / "tidy.csv"
    fallback = root / "results" / "tables" / "tidy.csv"
    return fallback if not default.exists() and fallback.exists() else default


def figures_dir() -> Path:
    """Where notebooks save figures: ``$TSLLM_FIG_DIR``, else ``results/figures`` under the repo root."""
    if os.environ.get("TSLLM_FIG_DIR"):
        return Path(os.environ["TSLLM_FIG_DIR"]).expanduser()
    return repo_root() / "results" / "figures"


def save_figure(fig: Any, name: str) -> Path | None:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` when ``TSLLM_SAVE_FIGS=1``; returns the path or None."""
    if os.environ.get("TSLLM_SAVE_FIGS") != "1":
        return None
    folder = figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    logger.info("saved %s", path)
    return path


# --------------------------------------------------------------------------------------------- loading

def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]...`` or None when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _tidy_row(record: dict[str, Any], path: Path) -> dict[str, Any]:
    row = {key: record.get(key) for key in SCALAR_KEYS}
    config = record.get("config") or {}
    # The config is the fallback for keys an older record may not have lifted to the top level.
    fallbacks = {
        "dataset": _get(config, "data", "name"), "encoder": _get(config, "encoder", "name"),
        "mode": _get(config, "mode", "name"), "lr": _get(config, "train", "lr"),
        "num_tokens": _get(config, "encoder", "num_tokens"), "seed": _get(config, "seed"),
    }
    for key, value in fallbacks.items():
        if row[key] is None:
            row[key] = value
    row.update(
        sweep=_get(config, "sweep_name"),
        epochs=_get(config, "train", "epochs"),
        trainable_params=_get(record, "params", "trainable"),
        frozen_params=_get(record, "params", "frozen"),
        git_sha=_get(record, "env", "git", "sha"),
        device=_get(record, "env", "device"),
        path=str(path),
    )
    row.update({f"data_{k}": _get(record, "data", k) for k in DATA_KEYS})
    return row


def _read_record(path: Path) -> dict[str, Any] | None:
    """The parsed record, or None (with a warning naming the file) when it is not a usable record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("skipping malformed record %s: %s", path, e)
        return None
    if not isinstance(record, dict) or "status" not in record:
        logger.warning("skipping malformed record %s: not a run record (no 'status')", path)
        return None
    return record


def load_records(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Every ``record.json`` below ``paths`` (searched recursively) as one tidy row per run.

    Failed and running runs are kept with their status; tables use finished runs only. A record that
    cannot be parsed is skipped with a warning.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: dict[Path, None] = {}  # ordered set: overlapping arguments must not count a run twice
    for base in map(Path, paths):
        if base.is_file():
            files[base.resolve()] = None
        elif base.is_dir():
            files.update(dict.fromkeys(sorted(p.resolve() for p in base.rglob(RECORD))))
        else:
            logger.warning("no such file or directory: %s", base)
    rows = [_tidy_row(rec, f) for f in files if (rec := _read_record(f)) is not None]
    df = _typed(pd.DataFrame(rows, columns=list(TIDY_COLUMNS)))
    logger.info("loaded %d run records (%s)", len(df),
                ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items()) or "none")
    return df


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    # Nullable integers keep num_kernels=6 from printing as 6.0 next to the NaN of other encoders.
    for column in INT_COLUMNS:
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce").round().astype("Int64")
    return df


def load_tidy(path: str | Path) -> pd.DataFrame:
    """Read a tidy table written by the CLI (``.csv`` or ``.parquet``)."""
    path = Path(path)
    return _typed(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))


def write_tidy(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Write ``tidy.csv`` (always) and ``tidy.parquet`` (when pyarrow is importable) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "tidy.csv"]
    df.to_csv(written[0], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        logger.info("pyarrow not importable: tidy.parquet not written")
    else:
        df.to_parquet(out / "tidy.parquet", index=False)
        written.append(out / "tidy.parquet")
    return written


# ----------------------------------------------------------------------------------------- aggregation

def accuracy_column(protocol: str) -> str:
    """The tidy column holding the accuracy a protocol reports."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def protocol_label(protocol: str) -> str:
    """Human-readable statement of what an accuracy under ``protocol`` means."""
    return f"protocol {protocol} ({accuracy_column(protocol)}): {PROTOCOL_LABELS[protocol]}"


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """Known names in the study's order (matching on the part before any '['), the rest sorted after."""
    values = list(dict.fromkeys(values))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(values, key=lambda v: (rank.get(str(v).split("[")[0], len(order)), str(v)))


def usable_runs(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Finished runs that have an accuracy under ``protocol``, with an ``acc`` and an ``arm`` column.

    ``arm`` is the mode, qualified by the LLM (``hybrid[llama31_8b]``) only when one mode was run
    with several LLMs, so runs on different backbones are never pooled.
    """
    column = accuracy_column(protocol)
    finished = df[df["status"] == "finished"]
    runs = finished[finished[column].notna()].copy()
    if len(runs) < len(finished):
        logger.debug("%d finished runs have no %s and are left out", len(finished) - len(runs), column)
    runs["acc"] = runs[column].astype(float)
    llms_per_mode = runs.groupby("mode")["llm"].nunique()
    qualify = runs["mode"].map(llms_per_mode).fillna(0) > 1
    mode = runs["mode"].astype(str)
    runs["arm"] = mode.where(~qualify, mode + "[" + runs["llm"].astype(str) + "]")
    return runs


def dataset_means(df: pd.DataFrame, protocol: str, by: Sequence[str]) -> pd.DataFrame:
    """Per cell ``by`` and dataset: mean and std of accuracy over seeds, and how many seeds.

    Runs sharing a cell, dataset and seed (e.g. several learning rates pooled into one cell) are
    averaged into that seed first, with a warning, so they cannot pass for extra seeds.
    """
    by = list(by)
    runs = usable_runs(df, protocol)
    keys = [*by, "dataset", "seed"]
    per_seed = runs.groupby(keys, dropna=False, sort=False).agg(acc=("acc", "mean"), n_runs=("acc", "size"))
    duplicated = per_seed[per_seed["n_runs"] > 1]
    if len(duplicated):
        varying = runs.groupby(keys, dropna=False)[[c for c in POOLABLE if c not in keys]].nunique(dropna=False)
        settings = [c for c in varying.columns if varying[c].gt(1).any()]
        logger.warning("%d (%s) groups hold several runs differing in %s; each group averaged into one seed "
                       "(filter the runs, e.g. by sweep, to compare single settings)", len(duplicated),
                       ", ".join(keys), ", ".join(settings) or "nothing (repeated runs)")
    grouped = per_seed.reset_index().groupby([*by, "dataset"], dropna=False, sort=True)
    return grouped.agg(mean=("acc", "mean"), std=("acc", "std"), n_seeds=("acc", "size"),
                       n_runs=("n_runs", "sum")).reset_index()


def aggregate(df: pd.DataFrame, protocol: str, by: Sequence[str]) -> pd.DataFrame:
    """Per cell ``by``: mean over datasets of the per-dataset seed means.

    Columns: ``mean``, ``seed_std`` (the mean over datasets of the seed std within a dataset: the
    spread a new seed would show), ``n_datasets``, ``n_runs``, ``min_seeds``, ``max_seeds``.
    """
    per_dataset = dataset_means(df, protocol, by)
    grouped = per_dataset.groupby(list(by), dropna=False, sort=True)
    return grouped.agg(mean=("mean", "mean"), seed_std=("std", "mean"), n_datasets=("dataset", "nunique"),
                       n_runs=("n_runs", "sum"), min_seeds=("n_seeds", "min"),
                       max_seeds=("n_seeds", "max")).reset_index()


def _labelled(table: pd.DataFrame, protocol: str, **attrs: Any) -> pd.DataFrame:
    table.attrs.update(protocol=protocol, label=protocol_label(protocol), **attrs)
    return table


def paired_wilcoxon(x: Sequence[float], y: Sequence[float]) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired ``x`` vs ``y`` and a note when it is NaN."""
    diff = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(diff) < MIN_PAIRED:
        return math.nan, f"p not computed: {len(diff)} paired datasets (< {MIN_PAIRED})"
    if np.all(diff == 0):
        return math.nan, "p not computed: all paired differences are zero"
    return float(stats.wilcoxon(x, y).pvalue), ""


# -------------------------------------------------------------------------------------------- tables

def _wide(per_dataset: pd.DataFrame, by: Sequence[str], values: str, sep: str = "/") -> pd.DataFrame:
    """Pivot :func:`dataset_means` output to rows dataset, one column per cell (in the study's order)."""
    by = list(by)
    labels = [sep.join(map(str, key)) for key in per_dataset[by].itertuples(index=False)]
    cells = per_dataset.assign(cell=pd.Series(labels, index=per_dataset.index, dtype=object))
    order = cells.drop_duplicates("cell").sort_values(by, key=_sort_key)["cell"]
    return cells.pivot(index="dataset", columns="cell", values=values).reindex(columns=list(order))


def dataset_matrix(df: pd.DataFrame, protocol: str, by: Sequence[str] = ("encoder", "arm"),
                   sep: str = "/") -> pd.DataFrame:
    """Rows dataset, one column per cell ``by`` (joined with ``sep``): seed-mean accuracy."""
    return _labelled(_wide(dataset_means(df, protocol, by), by, "mean", sep), protocol)


def _sort_key(column: pd.Series) -> pd.Series:
    order = {"encoder": ENCODER_ORDER, "arm": MODE_ORDER, "mode": MODE_ORDER}.get(str(column.name))
    if order is None:
        return column
    ranked = _ordered(column.dropna().astype(str).unique(), order)
    return column.astype(str).map({name: i for i, name in enumerate(ranked)})


def encoder_mode_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The headline table: per encoder, mean accuracy of each arm over datasets, and hybrid - standalone.

    Columns: one per arm (``standalone``, ``hybrid``, ``lora`` ...), ``n <arm>`` (datasets), and for
    each non-standalone arm ``delta`` (mean paired difference, on datasets both arms have),
    ``p_wilcoxon`` (signed-rank test over those datasets), ``n_paired`` and ``note``; these carry the
    suffix `` [<arm>]`` for every arm but ``hybrid``.
    """
    per_dataset = dataset_means(df, protocol, ["encoder", "arm"])
    summary = aggregate(df, protocol, ["encoder", "arm"]).set_index(["encoder", "arm"])
    arms = _ordered(per_dataset["arm"], MODE_ORDER)
    compared = [a for a in arms if a != BASELINE_ARM] if BASELINE_ARM in arms else []
    rows = []
    for encoder in _ordered(per_dataset["encoder"], ENCODER_ORDER):
        wide = per_dataset[per_dataset["encoder"] == encoder].pivot(index="dataset", columns="arm", values="mean")
        row: dict[str, Any] = {"encoder": encoder}
        for arm in arms:
            cell = (encoder, arm) in summary.index
            row[arm] = summary.loc[(encoder, arm), "mean"] if cell else math.nan
            row[f"n {arm}"] = int(summary.loc[(encoder, arm), "n_datasets"]) if cell else 0
        for arm in compared:
            suffix = "" if arm == "hybrid" else f" [{arm}]"
            pair = wide.reindex(columns=[arm, BASELINE_ARM]).dropna()
            diff = pair[arm] - pair[BASELINE_ARM]
            p_value, note = paired_wilcoxon(pair[arm], pair[BASELINE_ARM])
            row.update({f"delta{suffix}": diff.mean() if len(diff) else math.nan, f"p_wilcoxon{suffix}": p_value,
                        f"n_paired{suffix}": len(diff), f"note{suffix}": note})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["encoder"] if not rows else None).set_index("encoder")
    return _labelled(table, protocol)


GRID_KEYS = ("encoder", "arm", "lr", "num_kernels", "num_tokens")


def grid_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Mean accuracy over datasets per encoder, arm, lr, num_kernels and num_tokens (long format)."""
    table = aggregate(df, protocol, GRID_KEYS)
    table = table.sort_values(list(GRID_KEYS), key=_sort_key).reset_index(drop=True)
    return _labelled(table, protocol)


def grid_matrix(grid: pd.DataFrame, encoder: str, arm: str, num_tokens: Any) -> pd.DataFrame:
    """One heatmap panel from :func:`grid_table`: rows lr, columns num_kernels ("-" when not used).

    Rows and columns span every lr and num_kernels the encoder/arm was run with at any num_tokens,
    so the panels of one figure line up (cells never run are NaN).
    """
    cells = grid[(grid["encoder"] == encoder) & (grid["arm"] == arm)]
    cells = cells.assign(num_kernels=cells["num_kernels"].map(lambda k: "-" if pd.isna(k) else str(int(k))))
    panel = cells[cells["num_tokens"] == num_tokens]
    matrix = panel.pivot_table(index="lr", columns="num_kernels", values="mean", aggfunc="mean")
    kernels = sorted(cells["num_kernels"].unique(), key=lambda k: (k == "-", int(k) if k != "-" else 0))
    return matrix.reindex(index=sorted(cells["lr"].unique()), columns=kernels)


def _mean_std(mean: float, std: float, n: int) -> str:
    seeds = f"({n} seed{'s' if n != 1 else ''})"
    return f"{mean:.3f} {seeds}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f} {seeds}"


def per_dataset_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Rows dataset, columns ``encoder/arm``: ``"mean ± std (n seeds)"`` strings."""
    by = ["encoder", "arm"]
    per_dataset = dataset_means(df, protocol, by)
    text = [_mean_std(m, s, n) for m, s, n in
            zip(per_dataset["mean"], per_dataset["std"], per_dataset["n_seeds"], strict=True)]
    table = _wide(per_dataset.assign(text=pd.Series(text, index=per_dataset.index, dtype=object)), by, "text")
    return _labelled(table.fillna(""), protocol)


def reference_table(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None,
                    methods: Sequence[str] = DEFAULT_METHODS, archive: str = DEFAULT_ARCHIVE) -> pd.DataFrame:
    """Our per-dataset seed means beside published accuracies for the same datasets.

    Published numbers are taken from ``reference_csv`` (default: the copy under ``results/reference``)
    for rows whose ``archive`` equals ``archive``; each column is labelled ``method (source_repo)``.
    """
    ours = dataset_matrix(df, protocol)
    reference_csv = Path(reference_csv or repo_root() / REFERENCE_CSV)
    reference = pd.read_csv(reference_csv)
    missing = [m for m in methods if m not in set(reference["method"])]
    if missing:
        logger.warning("methods not in %s: %s (available: %s)", reference_csv, missing,
                       sorted(reference["method"].unique()))
    rows = reference[reference["method"].isin(methods) & (reference["archive"] == archive)
                     & reference["dataset"].isin(ours.index)]
    table = ours.copy()
    for method in (m for m in methods if m not in missing):
        picked = rows[rows["method"] == method]
        repos = ", ".join(sorted(picked["source_repo"].astype(str).unique())) or "no rows for this archive"
        table[f"{method} ({repos})"] = picked.set_index("dataset")["accuracy"].reindex(table.index)
    return _labelled(table, protocol, note=f"published columns: archive {archive}, from {reference_csv.name}")


# ---------------------------------------------------------------------------------- critical difference

def critical_difference(df_wide: pd.DataFrame, alpha: float = 0.05) -> tuple[pd.Series, float]:
    """Average ranks (1 = best) of the methods (columns) over datasets (rows) and the Nemenyi CD.

    Datasets missing any method are dropped. ``cd`` is NaN when the Friedman/Nemenyi procedure is
    undefined (fewer than 3 methods or 3 complete datasets); ``avg_ranks.attrs`` then holds a
    ``note``, and otherwise the Friedman p-value ``friedman_p`` and ``n_datasets``.
    """
    complete = df_wide.dropna()
    k, n = complete.shape[1], complete.shape[0]
    # Highest accuracy gets rank 1; ties share the average rank.
    avg_ranks = complete.rank(axis=1, ascending=False).mean().sort_values() if n else pd.Series(dtype=float)
    avg_ranks.attrs.update(n_datasets=n, alpha=alpha, friedman_p=math.nan, note="")
    if k < 3 or n < 3:
        avg_ranks.attrs["note"] = (f"critical difference needs >= 3 methods and >= 3 datasets with all of "
                                   f"them; have {k} methods, {n} complete datasets")
        return avg_ranks, math.nan
    avg_ranks.attrs["friedman_p"] = float(stats.friedmanchisquare(*complete.to_numpy().T).pvalue)
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return avg_ranks, float(q_alpha * math.sqrt(k * (k + 1) / (6 * n)))


def _cliques(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``(i, j)`` of rank-sorted methods whose extreme ranks differ by less than ``cd``."""
    spans = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return spans


def plot_critical_difference(avg_ranks: pd.Series, cd: float, ax: Any = None, title: str | None = None) -> Any:
    """Demsar-style CD diagram: rank axis (1 = best, left), methods hung below, non-different groups joined.

    Without a defined ``cd`` (see :func:`critical_difference`) the axes carry a text note instead.
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    k = len(avg_ranks)
    ranks = avg_ranks.to_numpy()
    cliques = [] if math.isnan(cd) else _cliques(ranks, cd)
    half = math.ceil(k / 2)
    # Clique bars get their own band under the axis; method labels hang below that band.
    top = 0.45 + 0.3 * len(cliques)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 1.4 + 0.35 * (half + len(cliques))))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    if math.isnan(cd):
        note = avg_ranks.attrs.get("note") or "critical difference not defined"
        ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=ax.transAxes)
        return ax.figure
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
    ax.set_ylim(-(top + 0.5 * half + 0.2), 1.5)
    ax.plot([lo, hi], [0, 0], color="black", lw=1)
    for tick in range(lo, hi + 1):
        ax.plot([tick, tick], [0, 0.12], color="black", lw=1)
        ax.text(tick, 0.2, str(tick), ha="center", va="bottom", fontsize=9)
    ax.plot([lo, lo + cd], [1.0, 1.0], color="black", lw=2)
    ax.text(lo + cd / 2, 1.08, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    left_edge, right_edge = ax.get_xlim()
    for i, (name, rank) in enumerate(avg_ranks.items()):
        left = i < half
        # Best methods on the left from the top down, worst on the right from the top down.
        depth = -(top + 0.5 * (i if left else k - 1 - i))
        edge = left_edge if left else right_edge
        ax.plot([rank, rank, edge], [0, depth, depth], color="black", lw=0.8)
        ax.text(edge + (-0.02 if left else 0.02) * (hi - lo), depth, f"{name} ({rank:.2f})",
                ha="right" if left else "left", va="center", fontsize=9)
    for n, (i, j) in enumerate(cliques):
        y = -0.3 - 0.3 * n
        ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="tab:red", lw=3, solid_capstyle="round")
    return ax.figure


# -------------------------------------------------------------------------------------------- report

def _fmt(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float | np.floating):
        # Accuracies read best at a fixed 3 decimals; p-values and learning rates need significant digits.
        return f"{value:.3g}" if column.startswith("p_") or column == "lr" else f"{value:.3f}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """A DataFrame (index included) as a GitHub Markdown table; floats to 3 decimals, p-values to 3 digits."""
    frame = table.reset_index() if not isinstance(table.index, pd.RangeIndex) else table
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, c) for v, c in zip(row, columns, strict=True)) + " |")
    return "\n".join(lines)


def markdown_report(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None,
                    reference: bool = False) -> str:
    """All tables as Markdown, headed by the protocol and what the numbers rest on."""
    runs = usable_runs(df, protocol)
    counts = df["status"].value_counts()
    left_out = (f"left out: {counts.get('failed', 0)} failed, {counts.get('running', 0)} running, "
                f"{int(counts.get('finished', 0)) - len(runs)} finished without {accuracy_column(protocol)}")
    parts = ["# tsllm results", ""]
    if runs.empty:
        return "\n".join([*parts, f"**{protocol_label(protocol)}.** No usable runs; {left_out}."]) + "\n"
    seeds = dataset_means(df, protocol, ["encoder", "arm"])["n_seeds"]
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    parts.append(
        f"**{protocol_label(protocol)}.** Rests on {len(runs)} finished runs over {runs['dataset'].nunique()} "
        f"datasets and {runs['seed'].nunique()} distinct seeds ({seed_range} seeds per dataset and "
        f"encoder/arm); {left_out}. Means are over datasets of per-dataset seed means."
    )
    sections = [("Encoder x mode (headline)", encoder_mode_table(df, protocol),
                 "`n <arm>`: datasets; `delta`: hybrid - standalone on paired datasets; "
                 "`p_wilcoxon`: two-sided signed-rank test over those datasets"),
                ("Per dataset", per_dataset_table(df, protocol), "mean ± std over seeds (n seeds)"),
                ("Hyperparameter grid", grid_table(df, protocol),
                 "`seed_std`: mean within-dataset seed std; `n_runs`: runs behind each mean")]
    if reference:
        table = reference_table(df, protocol, reference_csv)
        sections.append(("Published reference accuracies", table, table.attrs["note"]))
    for title, table, note in sections:
        parts += ["", f"## {title}", "", f"_{table.attrs['label']}. {note}._", "", to_markdown(table)]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: load records, write tidy.csv/.parquet and report.md, print the report."""
    parser = argparse.ArgumentParser(prog="python -m tsllm.results", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="folders searched recursively for record.json")
    parser.add_argument("--out", type=Path, default=Path("results/tables"), help="output folder")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="val_selected")
    parser.add_argument("--reference", action="store_true", help="add published accuracies (results/reference)")
    parser.add_argument("--reference-csv", type=Path, default=None, help="override the reference CSV")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    df = load_records(args.dirs)
    written = write_tidy(df, args.out)
    if not (df["status"] == "finished").any():
        logger.error("no finished runs under %s: tidy table written, no report", [str(d) for d in args.dirs])
        return 1
    report = markdown_report(df, args.protocol, reference_csv=args.reference_csv, reference=args.reference)
    (args.out / "report.md").write_text(report)
    print(report)
    logger.info("wrote %s", ", ".join(str(p) for p in [*written, args.out / "report.md"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
