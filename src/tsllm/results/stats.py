"""Paired comparisons and their statistics: pairs on dataset and seed, Wilcoxon, bootstrap CI, ranks.

A comparison of two arms uses only (dataset, seed) pairs both arms ran with the same everything else
(the ``context`` column: the config without seed and arm). Arm means sit beside the delta over those
pairs only. Tests run over datasets (seeds averaged within a dataset first), the independent unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from tsllm.results.aggregate import (
    MODE_ORDER,
    cell_labels,
    labelled,
    ordered,
    per_seed,
    sort_key,
    usable_runs,
)
from tsllm.results.loading import text_of

# An exact two-sided signed-rank test over n pairs cannot give p < 0.05 below n = 6 (n = 5: p >= 0.0625).
MIN_PAIRED = 6
BOOTSTRAP = 10_000
BASELINE_BASES = ("standalone", "mean")
REFERENCE_BASES = ("hybrid", "llm")
PAIRED_COLUMNS = ("variant", "arm", "vs", "n pairs", "n datasets", "mean vs", "mean arm", "delta",
                  "median delta", "ci low", "ci high", "p_wilcoxon", "note")


def paired_wilcoxon(x: Sequence[float], y: Sequence[float]) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p of paired ``x`` vs ``y``, or NaN and the reason it is not given."""
    diff = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(diff) < MIN_PAIRED:
        return math.nan, f"{len(diff)} paired datasets: no p < 0.05 is possible below {MIN_PAIRED}"
    if np.all(diff == 0):
        return math.nan, "all paired differences are zero"
    return float(stats.wilcoxon(x, y).pvalue), ""


def bootstrap_median_ci(diff: Sequence[float], level: float = 0.95, reps: int = BOOTSTRAP,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the median of ``diff`` (resampling its entries, seeded); NaN below 2."""
    diff = np.asarray(diff, dtype=float)
    if len(diff) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(diff[rng.integers(0, len(diff), size=(reps, len(diff)))], axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def _base(arm: str) -> str:
    return str(arm).split("[")[0]


def default_baseline(arms: Sequence[str]) -> str | None:
    """The no-LLM arm: ``standalone`` (or the ``mean`` reader), unqualified if there is one."""
    candidates = [a for a in ordered(arms, MODE_ORDER) if _base(a) in BASELINE_BASES]
    return next((a for a in candidates if a in BASELINE_BASES), candidates[0] if candidates else None)


def reference_defaults() -> dict[str, str]:
    """The LLM reader's and the LLM's declared defaults as tables print them (``reader.prompt``: ``text``);
    a qualifier at its default (or null) does not make an arm a control."""
    from tsllm.config import LLMConfig
    from tsllm.identity import named
    from tsllm.readers import LLMReader

    declared = {f"reader.{k}": v for k, v in LLMReader.Options.defaults().items()}
    declared |= {f"llm.{k}": v for k, v in LLMConfig.defaults().items()}
    declared["reader.align.name"] = named(declared.pop("reader.align"))
    return {k: text_of(v) for k, v in declared.items()}


def default_reference(arms: Sequence[str]) -> str | None:
    """The pretrained frozen-LLM arm the controls are measured against.

    ``hybrid`` itself when unqualified; otherwise the hybrid arm whose qualifiers are fewest once
    the reader's defaults (``null``, ``pretrained``, ``text``, ``pad``...) are discounted.
    """
    candidates = [a for a in arms if _base(a) in REFERENCE_BASES]
    if not candidates:
        return None
    defaults = reference_defaults()

    def changes(arm: str) -> int:
        quals = arm[len(_base(arm)):].strip("[]").split(", ") if "[" in arm else []
        pairs = [q.partition("=") for q in quals]
        return sum(v != "null" and defaults.get(k) != v for k, _, v in pairs)

    return min(candidates, key=lambda a: (changes(a), a not in REFERENCE_BASES, a))


def paired_datasets(df: pd.DataFrame, protocol: str, baseline: str | None = None,
                    arms: Sequence[str] | None = None) -> pd.DataFrame:
    """Per variant, arm and dataset: both arms' means over the seeds they share (the pairs).

    Columns: ``variant``, ``arm``, ``vs`` (the baseline arm), ``dataset``, ``n pairs`` (paired seeds),
    ``acc vs``, ``acc arm``. ``baseline`` defaults to each variant's own no-LLM arm (:func:`default_baseline`
    of the arms that variant ran): records from before readers call it ``standalone``, later ones ``mean``,
    and one baseline for a table that holds both would leave the other generation's variants out unsaid.
    """
    runs = usable_runs(df, protocol)
    columns = ["variant", "arm", "vs", "dataset", "n pairs", "acc vs", "acc arm"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    seeds = per_seed(runs, ["variant", "arm", "context"])
    keys = ["variant", "context", "dataset", "seed"]
    frames, baselines = [], []
    for _, runs_of_variant in seeds.groupby("variant", sort=False):
        present = list(runs_of_variant["arm"].unique())
        vs = baseline or default_baseline(present)
        if vs is None or vs not in present:
            continue
        baselines.append(vs)
        base = runs_of_variant[runs_of_variant["arm"] == vs]
        for arm in [a for a in ordered(arms or present, MODE_ORDER) if a != vs]:
            pairs = base.merge(runs_of_variant[runs_of_variant["arm"] == arm], on=keys, suffixes=(" vs", " arm"))
            grouped = pairs.groupby(["variant", "dataset"], sort=False)
            per_dataset = grouped.agg(**{"n pairs": ("seed", "size"), "acc vs": ("acc vs", "mean"),
                                         "acc arm": ("acc arm", "mean")}).reset_index()
            frames.append(per_dataset.assign(arm=arm, vs=vs))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    out = out.reindex(columns=columns)
    out.attrs["baseline"] = baseline or (", ".join(dict.fromkeys(baselines)) or None)
    return out


def paired_table(df: pd.DataFrame, protocol: str, baseline: str | None = None,
                 arms: Sequence[str] | None = None) -> pd.DataFrame:
    """Each arm against ``baseline`` per variant, over the (dataset, seed) pairs both ran.

    Columns: :data:`PAIRED_COLUMNS`. ``mean vs``/``mean arm``/``delta`` are means over datasets of the
    per-dataset means over paired seeds; ``median delta`` with a bootstrap CI over datasets
    (``ci low``/``ci high``); ``p_wilcoxon`` over datasets, or NaN with a ``note``.
    """
    per_dataset = paired_datasets(df, protocol, baseline, arms)
    rows = [_paired_row(group, variant, arm, group["vs"].iloc[0])
            for (variant, arm), group in per_dataset.groupby(["variant", "arm"], sort=False)]
    table = pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))
    table = table.sort_values(["variant", "arm"], key=sort_key).reset_index(drop=True)
    return labelled(table, protocol, baseline=per_dataset.attrs.get("baseline"))


def _paired_row(per_dataset: pd.DataFrame, variant: str, arm: str, vs: str) -> dict:
    """One row of :data:`PAIRED_COLUMNS` from per-dataset ``acc arm``/``acc vs``/``n pairs``."""
    diff = (per_dataset["acc arm"] - per_dataset["acc vs"]).astype(float)
    p_value, note = paired_wilcoxon(per_dataset["acc arm"], per_dataset["acc vs"])
    low, high = bootstrap_median_ci(diff)
    return {"variant": variant, "arm": arm, "vs": vs, "n pairs": int(per_dataset["n pairs"].sum()),
            "n datasets": len(per_dataset), "mean vs": per_dataset["acc vs"].mean(),
            "mean arm": per_dataset["acc arm"].mean(), "delta": diff.mean(), "median delta": diff.median(),
            "ci low": low, "ci high": high, "p_wilcoxon": p_value, "note": note}


def cells_paired_table(df: pd.DataFrame, protocol: str, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Each ``(cell, vs)`` pair of ``variant/arm`` cells, paired on dataset and seed only.

    For arms no config context can pair, because their encoders differ: the latent arm
    (``inception/llm``) against the text arm (``none/text_probe``), or two encoders. Everything but
    dataset and seed may differ, so keep each cell to one setting (``--sweep``/``--where``); a cell
    with two runs for one dataset and seed (two settings under one label) is refused. Columns: :data:`PAIRED_COLUMNS`, ``variant`` holding
    the cell and ``arm`` its vs.
    """
    seeds = per_seed(usable_runs(df, protocol), ["variant", "arm", "context"])
    seeds = seeds.assign(cell=cell_labels(seeds))
    rows = []
    for cell, vs in pairs:
        sides = []
        for name in (cell, vs):
            runs = seeds[seeds["cell"] == name]
            if runs.empty:
                raise ValueError(f"no usable runs of cell {name!r}; cells here: {sorted(seeds['cell'].unique())}")
            if runs.duplicated(["dataset", "seed"]).any():
                raise ValueError(f"cell {name!r} holds runs of several settings for one dataset and seed; narrow "
                                 f"it with --sweep or --where so a pair compares one setting with one")
            sides.append(runs[["dataset", "seed", "acc"]])
        both = sides[0].merge(sides[1], on=["dataset", "seed"], suffixes=(" arm", " vs"))
        per_dataset = both.groupby("dataset").agg(**{"n pairs": ("seed", "size"), "acc arm": ("acc arm", "mean"),
                                                     "acc vs": ("acc vs", "mean")})
        if per_dataset.empty:
            raise ValueError(f"cells {cell!r} and {vs!r} share no (dataset, seed)")
        rows.append(_paired_row(per_dataset, cell, "", vs))
    return labelled(pd.DataFrame(rows, columns=list(PAIRED_COLUMNS)), protocol)


def headline_table(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Every arm against the no-LLM arm (hybrid - standalone), paired per variant."""
    return paired_table(df, protocol)


def controls_table(df: pd.DataFrame, protocol: str, reference: str | None = None) -> pd.DataFrame:
    """Every arm against the pretrained frozen-LLM arm (:func:`default_reference` unless named), paired."""
    runs = usable_runs(df, protocol)
    if reference is None and "run_arm" in runs:
        # Runs that name their own arm: the reference is the one whose runs all read with the plain,
        # pretrained frozen LLM (label "llm": no setting off its defaults); of several such arms (an
        # encoder setting such as the kernel sizes tells them apart), the one without a qualifier.
        plain = runs.groupby("arm")["run_arm"].agg(lambda s: set(s) == {"llm"})
        reference = min(plain[plain].index, key=lambda arm: (arm != "llm", len(arm), arm), default=None)
    reference = reference or default_reference(list(runs["arm"].unique()) if len(runs) else [])
    if reference is None:
        return labelled(pd.DataFrame(columns=list(PAIRED_COLUMNS)), protocol, baseline=None)
    return paired_table(df, protocol, baseline=reference)


def critical_difference(df_wide: pd.DataFrame, alpha: float = 0.05) -> tuple[pd.Series, pd.DataFrame | None]:
    """Average ranks (1 = best) of the methods (columns) over datasets (rows) and Nemenyi p-values.

    Datasets missing any method are dropped. The p-value matrix (scikit-posthocs'
    ``posthoc_nemenyi_friedman``) is None when the procedure is undefined (fewer than 3 methods or
    3 complete datasets); ``avg_ranks.attrs`` then holds a ``note``, otherwise the Friedman p-value
    ``friedman_p`` and ``n_datasets``.
    """
    complete = df_wide.dropna()
    k, n = complete.shape[1], complete.shape[0]
    # Highest accuracy gets rank 1; ties share the average rank.
    avg_ranks = complete.rank(axis=1, ascending=False).mean().sort_values() if n else pd.Series(dtype=float)
    avg_ranks.attrs.update(n_datasets=n, alpha=alpha, friedman_p=math.nan, note="")
    if k < 3 or n < 3:
        avg_ranks.attrs["note"] = (f"critical difference needs >= 3 methods and >= 3 datasets with all of "
                                   f"them; have {k} methods, {n} complete datasets")
        return avg_ranks, None
    import scikit_posthocs as sp

    avg_ranks.attrs["friedman_p"] = float(stats.friedmanchisquare(*complete.to_numpy().T).pvalue)
    names = [str(c) for c in complete.columns]
    sig = sp.posthoc_nemenyi_friedman(complete.to_numpy())
    sig.index, sig.columns = names, names
    ranks = avg_ranks.rename(index=str)
    ranks.attrs.update(avg_ranks.attrs)
    return ranks, sig
