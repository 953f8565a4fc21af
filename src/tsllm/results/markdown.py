"""Markdown: tables, the headline table the README shows, and the full report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsllm.results.aggregate import (
    CELL,
    OPTIMISTIC_LABEL,
    accuracy_column,
    column_means,
    cost_table,
    dataset_means,
    diagnostics_summary,
    grid_table,
    per_dataset_table,
    protocol_effect_table,
    protocol_label,
    protocol_table,
    rank_matrix,
    reference_table,
    usable_runs,
)
from tsllm.results.stats import (
    MIN_PAIRED,
    cells_paired_table,
    controls_table,
    critical_difference,
    headline_table,
)


def _fmt(value: Any, column: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float | np.floating):
        # Accuracies read best at a fixed 3 decimals; p-values, lrs and costs need significant digits.
        if column.startswith("p_") or column == "lr":
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """A DataFrame (index included unless a RangeIndex) as a GitHub Markdown table."""
    frame = table.reset_index() if not isinstance(table.index, pd.RangeIndex) else table
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, c) for v, c in zip(row, columns, strict=True)) + " |")
    return "\n".join(lines)


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.3f}".replace("-", "−")


def paired_display(table: pd.DataFrame) -> pd.DataFrame:
    """A paired table as it is read: means over the pairs, delta, median [95% CI], n, Wilcoxon."""
    rows = []
    for _, r in table.iterrows():
        ci = "" if math.isnan(r["ci low"]) else f" [{_signed(r['ci low'])}, {_signed(r['ci high'])}]"
        p_text = f"{r['p_wilcoxon']:.3g}" if not math.isnan(r["p_wilcoxon"]) else f"n/a (n < {MIN_PAIRED})"
        if math.isnan(r["p_wilcoxon"]) and "zero" in r["note"]:
            p_text = "n/a (all zero)"
        rows.append({"encoder": r["variant"], "arm": r["arm"], "vs": r["vs"], "mean vs": f"{r['mean vs']:.3f}",
                     "mean arm": f"{r['mean arm']:.3f}", "delta": _signed(r["delta"]),
                     "median delta [95% CI]": _signed(r["median delta"]) + ci,
                     "pairs (datasets)": f"{r['n pairs']} ({r['n datasets']})", "Wilcoxon p": p_text})
    return pd.DataFrame(rows, columns=["encoder", "arm", "vs", "mean vs", "mean arm", "delta",
                                       "median delta [95% CI]", "pairs (datasets)", "Wilcoxon p"])


def _pooled_note(table: pd.DataFrame) -> str:
    keys = table.attrs.get("pooled") or []
    return f"pooled over {', '.join(keys)}" if keys else "nothing pooled but datasets and seeds"


PAIRED_NOTE = (f"pairs: same dataset and seed, every other config value equal but the arm's; means over "
               f"datasets of per-dataset means over the paired seeds; median delta with a seeded bootstrap 95% "
               f"CI over datasets; Wilcoxon signed-rank over datasets (no p < 0.05 is possible below "
               f"{MIN_PAIRED} datasets, so none is shown)")


def _paired_markdown(table: pd.DataFrame, protocol: str) -> str:
    return f"_{protocol_label(protocol)}; {PAIRED_NOTE}._\n\n{to_markdown(paired_display(table))}\n"


def headline_markdown(df: pd.DataFrame, protocol: str) -> str:
    """The README's headline table: every arm against the no-LLM arm, paired (what ``--headline`` prints)."""
    return _paired_markdown(headline_table(df, protocol), protocol)


def controls_markdown(df: pd.DataFrame, protocol: str, reference_arm: str | None = None,
                      arms: Sequence[str] = ()) -> str:
    """The README's controls table: every arm (or only `arms`) against the frozen-LLM arm, paired.

    What ``--controls`` (with ``--arm``) prints. An arm named in `arms` that has no row is a ValueError
    listing the arms there are, so a typo cannot leave a table silently short.
    """
    table = _only_arms(controls_table(df, protocol, reference_arm), arms, "paired against the reference")
    return _paired_markdown(table, protocol)


def _only_arms(table: pd.DataFrame, arms: Sequence[str], where: str) -> pd.DataFrame:
    """The rows of `arms` (all rows when empty); an arm without a row is a ValueError listing the arms."""
    if not arms:
        return table
    known = set(table["arm"])
    if missing := [a for a in arms if a not in known]:
        raise ValueError(f"--arm {', '.join(missing)}: no such arm {where} here; "
                         f"arms: {', '.join(sorted(known)) or '(none)'}")
    return table[table["arm"].isin(list(arms))]


DIAGNOSTICS_NOTE = ("means over the runs that carry each value; norm ratio: latent norm / median word-embedding "
                    "norm; probe: linear probe of the read state on TEST, per layer (L0 = the input); probe best: the "
                    "layer best on TEST, a bound chosen with TEST, not a result; probe chosen: the layer chosen "
                    "without TEST (on validation, else by 5-fold CV within TRAIN), scored on TEST; attn: the read position's share, "
                    "mean over layers; CKA vs no-LLM: linear CKA of the pooled latents with those of the same "
                    "encoder, dataset and seed trained without the LLM")


def diagnostics_markdown(df: pd.DataFrame, protocol: str, arms: Sequence[str] = ()) -> str:
    """The scalar diagnostics per arm (or only `arms`), columns no shown row carries dropped.

    What ``--diagnostics`` (with ``--arm``) prints: not paired, each row a mean over its own runs.
    """
    table = _only_arms(diagnostics_summary(df, protocol), arms, "with diagnostics")
    if table.empty:
        raise ValueError("no run here carries diagnostics (record['diagnostics'])")
    table = table[[c for c in table.columns if table[c].notna().any()]]
    return f"_{table.attrs['label']}; {DIAGNOSTICS_NOTE}; {_pooled_note(table)}._\n\n{to_markdown(table)}\n"


PAIRS_NOTE = ("pairs: same dataset and seed only (the cells' encoders or readers differ, so no other config value is "
              "matched); means over datasets of per-dataset means over the paired seeds; median delta (cell − vs) "
              f"with a seeded bootstrap 95% CI over datasets; Wilcoxon signed-rank over datasets (none below {MIN_PAIRED})")


def pairs_markdown(df: pd.DataFrame, protocol: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Each ``(cell, vs)`` of ``variant/arm`` cells paired on dataset and seed (what ``--pair`` prints)."""
    table = paired_display(cells_paired_table(df, protocol, pairs))
    table = table.drop(columns="arm").rename(columns={"encoder": "cell", "mean arm": "mean cell"})
    return f"_{protocol_label(protocol)}; {PAIRS_NOTE}._\n\n{to_markdown(table)}\n"


def ranks_table(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None) -> pd.DataFrame:
    """Our cells beside the published methods: mean accuracy and average rank on the same datasets.

    ``attrs``: ``note`` (what the datasets are, what was left out), ``friedman_p``, ``n_datasets`` and
    ``test`` (the Friedman p as read, or why there is none).
    """
    matrix = rank_matrix(df, protocol, reference_csv)
    ranks, _ = critical_difference(matrix)
    table = pd.DataFrame({"mean accuracy": matrix.mean(), "average rank": ranks}).sort_values("average rank")
    table.index.name = "method"
    table.attrs.update(matrix.attrs, friedman_p=ranks.attrs["friedman_p"], n_datasets=ranks.attrs["n_datasets"],
                       test=ranks.attrs["note"] or f"Friedman p = {ranks.attrs['friedman_p']:.3g}")
    return table


def ranks_markdown(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None) -> str:
    """The ranks table with its Friedman p (what ``--ranks`` prints)."""
    table = ranks_table(df, protocol, reference_csv)
    return (f"_{table.attrs['label']}; rank 1 = best, ties share the mean rank; {table.attrs['note']}; "
            f"{table.attrs['test']}._"
            f"\n\n{to_markdown(table)}\n")


HEADLINE_TITLE = "Paired comparisons against the no-LLM arm (headline)"
EMPTY = {HEADLINE_TITLE: "No pairs: no arm shares datasets and seeds with a no-LLM arm here.",
         "Cost": "No run reports cost fields (record['cost'])."}


def _left_out(df: pd.DataFrame, protocol: str, skipped: Sequence[str]) -> str:
    without = len(df) - len(usable_runs(df, protocol))
    failed = sum(": status 'failed'" in s for s in skipped)
    running = sum(": status 'running'" in s for s in skipped)
    return (f"left out: {failed} failed, {running} running, {len(skipped) - failed - running} malformed, "
            f"{without} finished without {accuracy_column(protocol)}")


def markdown_report(df: pd.DataFrame, protocol: str, reference_csv: str | Path | None = None,
                    reference: bool = False, cost: bool = False, reference_arm: str | None = None,
                    skipped: Sequence[str] | None = None) -> str:
    """All tables as Markdown, headed by the protocol and what the numbers rest on."""
    skipped = df.attrs.get("skipped", []) if skipped is None else skipped
    runs = usable_runs(df, protocol)
    left_out = _left_out(df, protocol, skipped)
    parts = ["# tsllm results", ""]
    if runs.empty:
        return "\n".join([*parts, f"**{protocol_label(protocol)}.** No usable runs; {left_out}."]) + "\n"
    seeds = dataset_means(df, protocol, CELL)["n_seeds"]
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    parts.append(
        f"**{protocol_label(protocol)}.** Rests on {len(runs)} finished runs over {runs['dataset'].nunique()} "
        f"datasets and {runs['seed'].nunique()} distinct seeds ({seed_range} seeds per dataset and "
        f"encoder/arm); {left_out}. Means are over datasets of per-dataset seed means. Rows differ in every "
        f"config value but dataset and seed: `encoder` names the setting keys that vary, `arm` the reader/LLM keys."
    )
    if df["variant"].str.contains("leaks TEST", regex=False).any():
        parts.append("\n**Some runs normalise with TEST statistics (marked `leaks TEST`).**")
    headline = headline_table(df, protocol)
    sections = [(HEADLINE_TITLE, paired_display(headline),
                 headline.attrs["label"], PAIRED_NOTE)]
    controls = controls_table(df, protocol, reference_arm)
    if controls.attrs.get("baseline") and len(runs["arm"].unique()) > 2:
        sections.append((f"Controls against `{controls.attrs['baseline']}`", paired_display(controls),
                         controls.attrs["label"], PAIRED_NOTE))
    effect = protocol_effect_table(df)
    if len(effect):
        sections.append(("The study's protocol against the honest one", effect, effect.attrs["label"],
                         "effect = study figure - honest figure, mean over the pairs"))
    study = protocol_table(df)
    if len(study):
        sections.append(("Study protocol vs honest figure (same runs)", study, study.attrs["label"],
                         "delta = study - honest over runs carrying both"))
    for title, table, note in [("Per dataset", per_dataset_table(df, protocol), "mean ± std over seeds (n seeds)"),
                               ("Hyperparameter grid", grid_table(df, protocol),
                                "`seed_std`: mean within-dataset seed std; `n_runs`: runs behind each mean")]:
        sections.append((title, table, table.attrs["label"], f"{note}; {_pooled_note(table)}"))
    if reference:
        table = reference_table(df, protocol, reference_csv)
        sections.append(("Published reference accuracies", table, table.attrs["label"], table.attrs["note"]))
        means = column_means(table)
        sections.append(("Means beside the published methods", means, table.attrs["label"],
                         "`mean`: over each column's own datasets; the last column over the datasets all columns have"))
        ranks = ranks_table(df, protocol, reference_csv)
        sections.append(("Average ranks beside the published methods", ranks, ranks.attrs["label"],
                         f"rank 1 = best; {ranks.attrs['note']}; {ranks.attrs['test']}"))
    for title, by in [("Diagnostics", CELL), ("Diagnostics per dataset", (*CELL, "dataset"))]:
        diagnostics = diagnostics_summary(df, protocol, by)
        if len(diagnostics):
            sections.append((title, diagnostics, diagnostics.attrs["label"],
                             f"{DIAGNOSTICS_NOTE}; {_pooled_note(diagnostics)}"))
    if cost:
        table = cost_table(df)
        sections.append(("Cost", table, table.attrs["label"], "per run; datasets differ in size"))
    for title, table, label, note in sections:
        if len(table):
            parts += ["", f"## {title}", "", f"_{label}. {note}._", "", to_markdown(table)]
        elif title in EMPTY:  # said rather than silently dropped
            parts += ["", f"## {title}", "", EMPTY[title]]
    return "\n".join(parts) + "\n"


__all__ = ["OPTIMISTIC_LABEL", "controls_markdown", "diagnostics_markdown", "headline_markdown", "markdown_report",
           "paired_display", "pairs_markdown", "ranks_markdown", "ranks_table", "to_markdown"]
