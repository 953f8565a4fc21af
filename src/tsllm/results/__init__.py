"""Results layer: run records -> one tidy table -> paired tables, statistics, report and plots.

One module per job: :mod:`.paths` (where things live), :mod:`.loading` (records -> tidy table, cells,
arm labels, filters), :mod:`.aggregate` (two-stage means and unpaired tables), :mod:`.stats` (paired
comparisons, Wilcoxon, bootstrap, ranks), :mod:`.plots` and :mod:`.markdown`; :mod:`.cli` is
``python -m tsllm.results``.
"""

from collections.abc import Sequence

import pandas as pd

from tsllm.results.aggregate import (
    CELL,
    DEFAULT_ARCHIVES,
    DEFAULT_METHODS,
    GRID_KEYS,
    OPTIMISTIC_LABEL,
    PROTOCOLS,
    accuracy_column,
    aggregate,
    column_means,
    cost_table,
    dataset_matrix,
    dataset_means,
    diagnostics_summary,
    grid_matrix,
    grid_table,
    per_dataset_table,
    pooled,
    protocol_effect_table,
    protocol_label,
    protocol_table,
    published_matrix,
    rank_matrix,
    reference_table,
    usable_runs,
)
from tsllm.results.cli import main
from tsllm.results.loading import (
    TIDY_COLUMNS,
    label_runs,
    load_records,
    load_tidy,
    parse_where,
    select,
    validate,
    write_tidy,
)
from tsllm.results.markdown import (
    controls_markdown,
    headline_markdown,
    markdown_report,
    paired_display,
    pairs_markdown,
    to_markdown,
)
from tsllm.results.paths import DEFAULT_OUT, figures_dir, repo_root, save_figure, tidy_path
from tsllm.results.plots import plot_critical_difference, plot_paired
from tsllm.results.stats import (
    MIN_PAIRED,
    bootstrap_median_ci,
    cells_paired_table,
    controls_table,
    critical_difference,
    default_baseline,
    default_reference,
    headline_table,
    paired_datasets,
    paired_table,
    paired_wilcoxon,
)


def filter_runs(df: pd.DataFrame, where: Sequence[str] = (), sweeps: Sequence[str] = ()) -> pd.DataFrame:
    """Rows matching every ``"key=value"`` in ``where`` and one of ``sweeps``, relabelled.

    :func:`select` then :func:`label_runs`, so arm and encoder labels name only what still varies.
    """
    return label_runs(select(df, parse_where(where), sweeps))


__all__ = [
    "CELL", "DEFAULT_ARCHIVES", "DEFAULT_METHODS", "DEFAULT_OUT", "GRID_KEYS", "MIN_PAIRED", "OPTIMISTIC_LABEL",
    "PROTOCOLS", "TIDY_COLUMNS", "accuracy_column", "aggregate", "bootstrap_median_ci", "cells_paired_table", "column_means", "controls_markdown", "controls_table",
    "cost_table", "critical_difference", "dataset_matrix", "dataset_means", "default_baseline",
    "default_reference", "diagnostics_summary", "figures_dir", "filter_runs", "grid_matrix", "grid_table", "headline_markdown",
    "headline_table", "label_runs", "load_records", "load_tidy", "main", "markdown_report", "paired_datasets", "paired_display", "pairs_markdown",
    "paired_table", "paired_wilcoxon", "per_dataset_table", "plot_critical_difference", "plot_paired", "pooled",
    "protocol_effect_table", "protocol_label", "protocol_table", "published_matrix", "rank_matrix", "reference_table", "repo_root", "save_figure", "select", "tidy_path",
    "to_markdown", "usable_runs", "validate", "write_tidy",
]
