"""2-D t-SNE maps of representations, coloured by class."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, 2] with scikit-learn's t-SNE (perplexity capped for small N)."""
    from sklearn.manifold import TSNE

    perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64))


def save_map(panels: dict[str, np.ndarray], labels: np.ndarray, classes: list[str], path: Path,
             title: str = "") -> Path:
    """One t-SNE panel per named representation, points coloured by class; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (name, x) in zip(axes[0], panels.items(), strict=True):
        xy = tsne_2d(x)
        for k, cls in enumerate(classes):
            sel = labels == k
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(k % cmap.N), label=str(cls))
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 12:
        axes[0][-1].legend(fontsize=7, markerscale=1.5, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
