"""Figures: the paired comparison (n printed on every bar group) and the critical-difference diagram."""

from __future__ import annotations

import textwrap
from typing import Any

import pandas as pd

#: Width of one bar group, and the characters a line of its label may hold at fontsize 7 (~0.053 in each):
#: the label and the "n = 48 pairs / 16 datasets" above the bars both stay inside the group.
GROUP_INCHES = 1.9
TICK_WIDTH = 28


def plot_paired(table: pd.DataFrame, ax: Any = None, title: str | None = None) -> Any:
    """Bars of each arm's mean beside its baseline's, over the pairs only, with delta and n above each group.

    ``table`` is a :func:`tsllm.results.stats.paired_table`. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        # The axes get exactly GROUP_INCHES a group (and 1.3 in of margins), however many groups there are.
        width = GROUP_INCHES * max(len(table), 1) + 1.3
        fig, ax = plt.subplots(figsize=(width, 3.8))
        fig.subplots_adjust(left=1.0 / width, right=1 - 0.3 / width)
    if table.empty:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no paired runs", ha="center", va="center", transform=ax.transAxes)
        return ax.figure
    x = range(len(table))
    width = 0.38
    ax.bar([i - width / 2 for i in x], table["mean vs"], width, label="baseline (over the pairs)")
    ax.bar([i + width / 2 for i in x], table["mean arm"], width, label="arm (over the pairs)")
    for i, (_, row) in enumerate(table.iterrows()):
        ax.text(i, max(row["mean vs"], row["mean arm"]) + 0.02,
                f"Δ {row['delta']:+.3f}\nn = {row['n pairs']} pairs / {row['n datasets']} datasets",
                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(x), [_tick_label(v, a, b) for v, a, b in zip(table["variant"], table["arm"], table["vs"],
                                                                    strict=True)], fontsize=7)
    ax.set_xlim(-0.5, len(table) - 0.5)  # no autoscale margin: it grows with the number of groups
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("mean test accuracy over paired datasets")
    if title:
        ax.set_title(title, fontsize=8)
    ax.legend(loc="upper center", ncol=2, frameon=False, fontsize=8)
    return ax.figure


def _tick_label(variant: str, arm: str, vs: str) -> str:
    """A bar group's label, wrapped to its width: a variant that names its settings
    (``inception[encoder.num_kernels=6, ...]``) would otherwise run under its neighbours' bars."""
    return "\n".join([*textwrap.wrap(str(variant), TICK_WIDTH), *textwrap.wrap(f"{arm} vs {vs}", TICK_WIDTH)])


def plot_critical_difference(avg_ranks: pd.Series, sig_matrix: pd.DataFrame | None, ax: Any = None,
                             title: str | None = None) -> Any:
    """Critical-difference diagram drawn by scikit-posthocs; a text note where it is undefined. Returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 1.6 + 0.3 * len(avg_ranks)))
    if title:
        ax.set_title(title, fontsize=9)
    if sig_matrix is None:
        ax.set_axis_off()
        note = avg_ranks.attrs.get("note") or "critical difference not defined"
        ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=ax.transAxes)
        return ax.figure
    import scikit_posthocs as sp

    sp.critical_difference_diagram(avg_ranks, sig_matrix, alpha=avg_ranks.attrs.get("alpha", 0.05), ax=ax)
    return ax.figure
