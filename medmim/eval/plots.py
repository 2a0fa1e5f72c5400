"""PNG figures of the downstream commands (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Lay out, write (creating the folder) and close `fig`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str = "ROC"
) -> Path:
    """ROC curves `{label: (fpr, tpr, auc)}` with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def plot_fractions(
    fractions: Sequence[float],
    series: dict[str, tuple[list[float], list[float]]],
    path: str | Path,
    ylabel: str = "AUC",
) -> Path:
    """Limited-data curve (SMART Fig. 6): `{name: (means, stds)}` against training fraction."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    x = [100 * f for f in fractions]
    for name, (mean, std) in series.items():
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set(xlabel="training data (%)", ylabel=ylabel, xticks=x, title="limited-data study")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_embedding(
    coords: np.ndarray, labels: np.ndarray, names: Sequence[str], path: str | Path, title: str
) -> Path:
    """A 2-D scatter of (N, 2) coordinates coloured by class (SMART Fig. 3)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for c, name in enumerate(names):
        sel = labels == c
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=8, color=cmap(c % cmap.N), label=name)
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, path)
