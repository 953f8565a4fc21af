"""Two-stage means (seeds within a dataset, then datasets) and the unpaired tables built on them.

Every table groups by ``variant`` and ``arm`` at least, which together hold every config key that
varies (see :func:`tsllm.results.loading.label_runs`); a table that groups by fewer says in
``attrs["pooled"]`` which varying keys it pooled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tsllm.results.loading import (
    ARM_NAME_KEYS,
    COST_KEYS,
    DATASET_KEYS,
    leaks_test,
    varying_keys,
    wall_hours,
    warn_once,
)
from tsllm.results.paths import repo_root

logger = logging.getLogger("tsllm.results")

PROTOCOLS: dict[str, str] = {
    "val_selected": "test_acc",
    "last_epoch": "test_acc_last_epoch",
    "study_best_test": "study_best_test_acc",
    "study_min_train_loss": "study_min_train_loss_test_acc",
}
OPTIMISTIC_LABEL = "optimistic: selected on TEST (the study's protocol)"
PROTOCOL_LABELS: dict[str, str] = {
    "val_selected": "test accuracy of the epoch chosen without TEST (train.selection: best validation accuracy, "
                    "or least training loss on all of TRAIN)",
    "last_epoch": "test accuracy after the last epoch",
    "study_best_test": OPTIMISTIC_LABEL,
    "study_min_train_loss": "test accuracy at the epoch of minimum training loss (the study's second figure)",
}
HONEST = "val_selected"
ENCODER_ORDER = ("mlp", "cnn", "inception", "resnet", "transformer")
MODE_ORDER = ("standalone", "mean", "hybrid", "lora")
CELL = ("variant", "arm")
GRID_KEYS = ("encoder", "arm", "lr", "num_kernels", "num_tokens")
DEFAULT_METHODS = ("MLP", "FCN", "ResNet", "InceptionTime", "ROCKET")
# Each published method from the file its authors ran it on: dl-4-tsc's 10-run means and the
# InceptionTime ensemble on UCR 2015 (the study's archive), ROCKET's paper file on the 2018 archive's
# copies of the 85 (it has no 2015 run). Overridable per method.
DEFAULT_ARCHIVES: dict[str, str] = {"MLP": "UCR2015-85", "FCN": "UCR2015-85", "ResNet": "UCR2015-85",
                                    "InceptionTime": "UCR2015-85", "ROCKET": "UCR2018-128"}
REFERENCE_CSV = Path("results") / "reference" / "ucr_published_accuracy.csv"


def accuracy_column(protocol: str) -> str:
    """The tidy column holding the accuracy a protocol reports."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def protocol_label(protocol: str) -> str:
    """Human-readable statement of what an accuracy under ``protocol`` means."""
    return f"protocol {protocol} ({accuracy_column(protocol)}): {PROTOCOL_LABELS[protocol]}"


def ordered(values: Iterable[Any], order: Sequence[str]) -> list[Any]:
    """Known names in the study's order (matching on the part before any '['), the rest sorted after."""
    values = list(dict.fromkeys(values))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(values, key=lambda v: (rank.get(str(v).split("[")[0].split(" ")[0], len(order)), str(v)))


def sort_key(column: pd.Series) -> pd.Series:
    """A pandas sort key putting encoders, variants and arms in the study's order."""
    order = {"encoder": ENCODER_ORDER, "variant": ENCODER_ORDER, "arm": MODE_ORDER,
             "mode": MODE_ORDER}.get(str(column.name))
    if order is None:
        return column
    ranked = ordered(column.dropna().astype(str).unique(), order)
    return column.astype(str).map({name: i for i, name in enumerate(ranked)})


def pooled(df: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """Varying config keys that take several values inside some group of ``by`` (besides dataset and seed)."""
    if df.empty:
        return []
    keys = [k for k in varying_keys(df) if k not in DATASET_KEYS and k not in ARM_NAME_KEYS]
    groups = df.groupby(list(by), dropna=False)
    return [k for k in keys if groups[k].nunique(dropna=False).gt(1).any()]


def usable_runs(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Runs that have an accuracy under ``protocol``, with it in an ``acc`` column."""
    column = accuracy_column(protocol)
    runs = df[df[column].notna()].copy() if column in df else df.iloc[:0].copy()
    runs["acc"] = runs[column].astype(float) if column in runs else pd.Series(dtype=float)
    return runs


def per_seed(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One accuracy per cell ``by``, dataset and seed; repeated runs of one config are averaged (with a warning)."""
    keys = [*by, "dataset", "seed"]
    seeds = runs.groupby(keys, dropna=False, sort=False).agg(acc=("acc", "mean"), n_runs=("acc", "size"))
    repeated = seeds[seeds["n_runs"] > 1].reset_index()
    if len(repeated):
        what = pooled(runs, keys)
        where = ", ".join(sorted({f"{r.variant} {r.arm} {r.dataset} seed {r.seed}" for r in repeated.itertuples()}
                                 if {"variant", "arm"} <= set(keys) else {f"{r.dataset} seed {r.seed}"
                                                                         for r in repeated.itertuples()}))
        warn_once("several runs %s averaged into one seed: %s",
                  f"pooling {', '.join(what)}" if what else "of the same config (repeats)", where)
    return seeds.reset_index()


def dataset_means(df: pd.DataFrame, protocol: str, by: Sequence[str] = CELL) -> pd.DataFrame:
    """Per cell ``by`` and dataset: mean and std of accuracy over seeds, and how many seeds."""
    by = list(by)
    seeds = per_seed(usable_runs(df, protocol), by)
    grouped = seeds.groupby([*by, "dataset"], dropna=False, sort=True)
    table = grouped.agg(mean=("acc", "mean"), std=("acc", "std"), n_seeds=("acc", "size"),
                        n_runs=("n_runs", "sum")).reset_index()
    table.attrs["pooled"] = pooled(usable_runs(df, protocol), by)
    return table


def aggregate(df: pd.DataFrame, protocol: str, by: Sequence[str] = CELL) -> pd.DataFrame:
    """Per cell ``by``: mean over datasets of the per-dataset seed means.

    Columns: ``mean``, ``seed_std`` (the mean over datasets of the seed std within a dataset: the
    spread a new seed would show), ``n_datasets``, ``n_runs``, ``min_seeds``, ``max_seeds``.
    """
    per_dataset = dataset_means(df, protocol, by)
    grouped = per_dataset.groupby(list(by), dropna=False, sort=True)
    table = grouped.agg(mean=("mean", "mean"), seed_std=("std", "mean"), n_datasets=("dataset", "nunique"),
                        n_runs=("n_runs", "sum"), min_seeds=("n_seeds", "min"),
                        max_seeds=("n_seeds", "max")).reset_index()
    return labelled(table, protocol, pooled=per_dataset.attrs["pooled"])


def labelled(table: pd.DataFrame, protocol: str, **attrs: Any) -> pd.DataFrame:
    """Attach the protocol and its label (and any other notes) to a table's attrs."""
    table.attrs.update({"protocol": protocol, "label": protocol_label(protocol), **attrs})
    table.attrs.setdefault("pooled", [])
    return table


def cell_labels(frame: pd.DataFrame, by: Sequence[str] = CELL, sep: str = "/") -> pd.Series:
    """Each row's cell as the column name the dataset tables give it: ``by`` values joined, ``variant/arm``."""
    labels = [sep.join(map(str, key)) for key in frame[list(by)].itertuples(index=False)]
    return pd.Series(labels, index=frame.index, dtype=object)


def wide(per_dataset: pd.DataFrame, by: Sequence[str], values: str, sep: str = "/") -> pd.DataFrame:
    """Pivot :func:`dataset_means` output to rows dataset, one column per cell (in the study's order)."""
    by = list(by)
    cells = per_dataset.assign(cell=cell_labels(per_dataset, by, sep))
    order = cells.drop_duplicates("cell").sort_values(by, key=sort_key)["cell"]
    return cells.pivot(index="dataset", columns="cell", values=values).reindex(columns=list(order))


def dataset_matrix(df: pd.DataFrame, protocol: str, by: Sequence[str] = CELL, sep: str = "/",
                   common_seeds: bool = False) -> pd.DataFrame:
    """Rows dataset, one column per cell ``by`` (joined with ``sep``): seed-mean accuracy.

    With ``common_seeds`` each dataset keeps only the seeds every cell ran, so a rank comparison
    across cells is paired like the delta tables (a dataset where no seed is shared is dropped).
    """
    runs = usable_runs(df, protocol)
    if common_seeds and len(runs):
        seeds = per_seed(runs, by)
        shared = seeds.assign(cell=cell_labels(seeds, by, sep)).pivot_table(index=["dataset", "seed"], columns="cell", values="acc").dropna()
        runs = runs[pd.MultiIndex.from_frame(runs[["dataset", "seed"]]).isin(shared.index)]
    per_dataset = dataset_means(runs, protocol, by)
    return labelled(wide(per_dataset, by, "mean", sep), protocol, pooled=per_dataset.attrs["pooled"],
                    common_seeds=common_seeds)


def grid_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Mean accuracy over datasets per encoder, arm, lr, num_kernels and num_tokens (long format)."""
    table = aggregate(df, protocol, GRID_KEYS)
    pooled_keys = table.attrs["pooled"]
    table = table.sort_values(list(GRID_KEYS), key=sort_key).reset_index(drop=True)
    return labelled(table, protocol, pooled=pooled_keys)


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
    """Rows dataset, columns ``variant/arm``: ``"mean ± std (n seeds)"`` strings."""
    per_dataset = dataset_means(df, protocol, CELL)
    text = [_mean_std(m, s, n) for m, s, n in
            zip(per_dataset["mean"], per_dataset["std"], per_dataset["n_seeds"], strict=True)]
    table = wide(per_dataset.assign(text=pd.Series(text, index=per_dataset.index, dtype=object)), CELL, "text")
    return labelled(table.fillna(""), protocol, pooled=per_dataset.attrs["pooled"])


def published_matrix(datasets: Sequence[str], reference_csv: str | Path | None = None,
                     methods: Sequence[str] = DEFAULT_METHODS,
                     archives: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Rows ``datasets``, one column per published method: its accuracy from ``reference_csv``.

    Each method's rows come from the archive ``archives`` names for it (default
    :data:`DEFAULT_ARCHIVES`); columns are labelled ``method (source_repo, archive)``; NaN where the
    file has no row. ``attrs["note"]`` says where every column came from.
    """
    reference_csv = Path(reference_csv or repo_root() / REFERENCE_CSV)
    reference = pd.read_csv(reference_csv)
    archives = {**DEFAULT_ARCHIVES, **(archives or {})}
    missing = [m for m in methods if m not in set(reference["method"])]
    if missing:
        warn_once("methods not in %s: %s (available: %s)", reference_csv, missing,
                  sorted(reference["method"].unique()))
    table = pd.DataFrame(index=pd.Index(list(datasets), name="dataset"))
    for method in (m for m in methods if m not in missing):
        archive = archives.get(method, "UCR2015-85")
        picked = reference[(reference["method"] == method) & (reference["archive"] == archive)]
        repos = ", ".join(sorted(picked["source_repo"].astype(str).unique())) or "no rows"
        table[f"{method} ({repos}, {archive})"] = picked.set_index("dataset")["accuracy"].reindex(table.index)
    table.attrs["note"] = f"published columns from {reference_csv.name}, each from the archive its label names"
    return table


def reference_table(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None,
                    methods: Sequence[str] = DEFAULT_METHODS,
                    archives: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Our per-dataset seed means beside published accuracies for the same datasets (:func:`published_matrix`)."""
    ours = dataset_matrix(df, protocol)
    published = published_matrix(list(ours.index), reference_csv, methods, archives)
    table = pd.concat([ours, published], axis=1)
    return labelled(table, protocol, pooled=ours.attrs["pooled"], note=published.attrs["note"])


def rank_matrix(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None,
                methods: Sequence[str] = DEFAULT_METHODS, archives: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Datasets by methods for a critical-difference diagram: our cells beside published methods.

    Our cells are those that cover the most datasets (a cell still running would otherwise shrink
    every comparison to its datasets); each dataset keeps the seeds all kept cells ran (paired).
    Rows are the datasets every column has. ``attrs["note"]`` names what was left out and why.
    """
    runs = usable_runs(df, protocol)
    cells = cell_labels(runs)
    coverage = runs["dataset"].groupby(cells).nunique()
    kept = coverage.index[coverage == coverage.max()] if len(coverage) else []
    dropped = [f"{c} ({n} datasets)" for c, n in coverage.items() if c not in kept]
    ours = dataset_matrix(runs[cells.isin(kept)], protocol, common_seeds=True)
    published = published_matrix(list(ours.index), reference_csv, methods, archives)
    both = pd.concat([ours, published], axis=1)
    complete = both.dropna()
    notes = [f"{len(complete)} datasets with every column", published.attrs["note"]]
    if dropped:
        notes.append(f"left out, covering fewer datasets than {coverage.max()}: {', '.join(dropped)}")
    if len(complete) < len(both):
        notes.append(f"datasets missing a column: {', '.join(sorted(set(both.index) - set(complete.index)))}")
    return labelled(complete, protocol, pooled=ours.attrs["pooled"], note="; ".join(notes))


def column_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per column of a dataset-by-method matrix: its mean over all its datasets and how many it has.

    A third column, ``mean over the N complete``, is the mean over the datasets every column has, so
    the methods are compared on the same datasets.
    """
    complete = table.dropna()
    out = pd.DataFrame({"mean": table.mean(), "n datasets": table.notna().sum(),
                        f"mean over the {len(complete)} complete": complete.mean()})
    out.index.name = "method"
    return labelled(out, table.attrs.get("protocol", HONEST), pooled=table.attrs.get("pooled", []))


def protocol_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant and arm: the honest figure beside each study-protocol figure on the same runs.

    For each study protocol present (``study_best_test``, ``study_min_train_loss``) only runs that carry
    both numbers count; ``delta`` is study - honest over those runs (two-stage means), ``n runs`` how many.
    Empty when no run carries a study figure.
    """
    rows = []
    for protocol in ("study_best_test", "study_min_train_loss"):
        column = accuracy_column(protocol)
        if column not in df or df[column].notna().sum() == 0:
            continue
        both = df[df[column].notna() & df[PROTOCOLS[HONEST]].notna()]
        honest = aggregate(both, HONEST).set_index(list(CELL))
        study = aggregate(both, protocol).set_index(list(CELL))
        for (variant, arm), cell in study.iterrows():
            rows.append({"variant": variant, "arm": arm, "study figure": protocol,
                         "honest": honest.loc[(variant, arm), "mean"], "study": cell["mean"],
                         "delta": cell["mean"] - honest.loc[(variant, arm), "mean"],
                         "n datasets": int(cell["n_datasets"]), "n runs": int(cell["n_runs"])})
    table = pd.DataFrame(rows, columns=["variant", "arm", "study figure", "honest", "study", "delta",
                                        "n datasets", "n runs"])
    table = table.sort_values(["variant", "arm"], key=sort_key).reset_index(drop=True)
    return labelled(table, HONEST, label=f"honest = {protocol_label(HONEST)}; study = {OPTIMISTIC_LABEL}")


#: The settings experiment=study_reproduction (with mode=study_standalone|study_hybrid) changes; an honest
#: run is the study run's counterpart when it agrees with it on every other setting (a test checks this
#: list against the composed configs).
STUDY_PROTOCOL_KEYS = frozenset({"data.normalise", "train.optimizer", "train.weight_decay", "train.stop_at_train_acc",
                                 "train.selection", "train.protocol", "reader.suffix", "reader.bos"})


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Setting values as text for equality tests: a missing value is "" (NaN never equals NaN)."""
    return frame.astype(object).where(frame.notna(), "").astype(str)


def protocol_effect_table(df: pd.DataFrame) -> pd.DataFrame:
    """The study's protocol against the honest one, per encoder and mode, paired on dataset and seed.

    Study runs are those carrying ``study_best_test_acc`` (``experiment=study_reproduction``); honest runs
    are plain ones (``val_selected`` protocol, validation selection, no TEST statistics) that agree with the
    study runs on every setting outside :data:`STUDY_PROTOCOL_KEYS` (so a random-init LLM's honest runs are
    not the pretrained study runs' counterpart). Each pair is one dataset and seed with both; the effect is
    the study's figure minus the honest one over those pairs. An (encoder, mode) whose study runs or
    matching honest runs have more than one config is left out rather than averaged.
    """
    columns = ["encoder", "mode", "n pairs", "honest", "study best TEST", "study TEST at min train loss",
               "effect best TEST", "effect min train loss", "datasets"]
    if "study_best_test_acc" not in df or df["study_best_test_acc"].notna().sum() == 0:
        return pd.DataFrame(columns=columns)
    leaks = df["data_leaks_test"].map(leaks_test)
    selection = df["train.selection"] if "train.selection" in df else pd.Series("val", index=df.index)
    honest = df[(df["protocol"] == HONEST) & ~leaks & selection.fillna("val").eq("val") & df["test_acc"].notna()]
    study = df[df["study_best_test_acc"].notna()]
    keys = ["encoder", "mode", "dataset", "seed"]
    rows = []
    for (encoder, mode), group in study.groupby(["encoder", "mode"], dropna=False):
        mine = honest[(honest["encoder"] == encoder) & (honest["mode"] == mode)]
        settings = [c for c in mine.columns if "." in c and c not in ("data.name", "data.root")]
        shared = [c for c in settings if c not in STUDY_PROTOCOL_KEYS]
        study_config = _as_text(group[shared]).drop_duplicates()
        if len(study_config) != 1:  # several study configs: never averaged
            continue
        mine = mine[(_as_text(mine[shared]) == study_config.iloc[0]).all(axis=1)]
        if len(_as_text(mine[settings]).drop_duplicates()) != 1:  # several honest configs: never averaged
            continue
        pairs = group.merge(mine[[*keys, "test_acc"]].rename(columns={"test_acc": "honest_acc"}), on=keys)
        if pairs.empty:
            continue
        rows.append({"encoder": encoder, "mode": mode, "n pairs": len(pairs), "honest": pairs["honest_acc"].mean(),
                     "study best TEST": pairs["study_best_test_acc"].mean(),
                     "study TEST at min train loss": pairs["study_min_train_loss_test_acc"].mean(),
                     "effect best TEST": (pairs["study_best_test_acc"] - pairs["honest_acc"]).mean(),
                     "effect min train loss": (pairs["study_min_train_loss_test_acc"] - pairs["honest_acc"]).mean(),
                     "datasets": ", ".join(sorted(pairs["dataset"].astype(str).unique()))})
    table = pd.DataFrame(rows, columns=columns)
    table.attrs.update(label="the study's protocol (experiment=study_reproduction: its system, TEST-leaking "
                             "min/max, best TEST over epochs / TEST at least training loss) against the honest "
                             "default (validation-selected), paired on dataset and seed", pooled=[])
    return table


DIAGNOSTIC_COLUMNS: dict[str, str] = {  # shown name -> tidy column (tsllm.diagnostics.summary_scalars)
    "norm ratio": "diag_norm_ratio_median",
    "top-1 cosine": "diag_top1_cosine",
    "collapse": "diag_collapse_cosine",
    "probe L0": "diag_probe_read_L0",
    "probe best": "diag_probe_read_max",
    "probe last": "diag_probe_read_last",
    "probe chosen": "diag_probe_read_chosen",
    "attn latents": "diag_attn_latents_mean",
    "attn first token": "diag_attn_first_token_mean",
    "CKA latents-read": "diag_cka_latents_read",
    "CKA vs no-LLM": "diag_cka_standalone_pooled_latents",
}


def diagnostics_summary(df: pd.DataFrame, protocol: str, by: Sequence[str] = CELL) -> pd.DataFrame:
    """Per ``by`` group: accuracy and the scalar diagnostics, means over the runs that carry diagnostics.

    Diagnostics are computed after selection (never selected on); ``probe best`` is the best layer's
    probe accuracy of the read state (chosen on TEST), ``probe chosen`` that of the layer chosen without
    TEST, ``attn *`` the read position's attention share averaged over layers.
    """
    runs = usable_runs(df, protocol)
    probe_layers = [c for c in runs.columns if c.startswith("diag_probe_read_L")]
    if probe_layers:
        runs["diag_probe_read_max"] = runs[probe_layers].apply(pd.to_numeric, errors="coerce").max(axis=1)
    shown = {name: col for name, col in DIAGNOSTIC_COLUMNS.items() if col in runs and runs[col].notna().any()}
    diagnosed = runs[runs[list(shown.values())].notna().any(axis=1)] if shown else runs.iloc[:0]
    if diagnosed.empty:
        table = pd.DataFrame(columns=[*by, "n runs", "acc", *shown])
    else:
        diagnosed = diagnosed.assign(**{c: pd.to_numeric(diagnosed[c], errors="coerce") for c in shown.values()})
        table = diagnosed.groupby(list(by), dropna=False).agg(
            **{"n runs": ("acc", "size"), "acc": ("acc", "mean")},
            **{name: (col, "mean") for name, col in shown.items()}).reset_index()
        table = table.sort_values(list(by), key=sort_key).reset_index(drop=True)
    table.attrs.update(label=f"{protocol_label(protocol)}, beside the scalar diagnostics of the same runs "
                             "(computed after selection)", pooled=pooled(df, by))
    return table


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant and arm: the mean of each ``record["cost"]`` field over the runs that report it.

    ``train_hours`` is the time spent in epochs, all runs added (seconds per epoch x epochs run, so a
    resumed run counts every session's epochs; loading and the final evaluations are not in it).
    ``wall_hours`` is each run's wall time over its sessions (:func:`~tsllm.results.loading.wall_hours`),
    all runs added: everything (loading, an LLM's reads of the series as text, evaluation); ``partial``
    counts the resumed runs whose earlier sessions were not timed, so it is a lower bound where that is not 0.
    """
    columns = [f"cost_{k}" for k in COST_KEYS if f"cost_{k}" in df and df[f"cost_{k}"].notna().any()]
    if not columns:
        table = pd.DataFrame(columns=[*CELL, "n runs"])
    else:
        costed = df[df[columns].notna().any(axis=1)].copy()
        for column in columns:
            costed[column] = pd.to_numeric(costed[column], errors="coerce")
        costed["train_hours"] = costed.get("cost_seconds_per_epoch", math.nan) * costed["epochs_run"] / 3600
        costed["wall_hours"], costed["partial"] = wall_hours(costed)
        table = costed.groupby(list(CELL), dropna=False).agg(
            **{"n runs": ("cell", "size")}, **{c.removeprefix("cost_"): (c, "mean") for c in columns},
            train_hours=("train_hours", "sum"), wall_hours=("wall_hours", "sum"),
            partial=("partial", "sum")).reset_index()
        table = table.sort_values(list(CELL), key=sort_key).reset_index(drop=True)
    table.attrs.update(label="cost per run, mean over the runs that report it (record['cost']); train_hours: "
                            "seconds per epoch x epochs run, all runs added; wall_hours: wall time over every session of a "
                            "run, all runs added (a lower bound where partial > 0: resumed runs whose earlier "
                            "sessions were not timed count their last one only)", pooled=[])
    return table
