"""Plots of the evaluations: confusion heatmaps and ROC curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(confusion: list[list[int]], path: Path, title: str) -> None:
    """Write a 2x2 confusion heatmap (rows true, cols predicted) with counts and row-%."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.shape != (2, 2):
        raise ValueError(f"confusion must be 2x2, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = ["negative", "positive"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    try:
        im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{cm[i, j]}\n({100 * frac[i, j]:.1f}%)", ha="center",
                        va="center", color="white" if frac[i, j] > 0.5 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
               xlabel="Predicted", ylabel="True", title=title)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row fraction")
        fig.tight_layout()
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def plot_roc_points(curves: dict[str, dict], path: Path, title: str) -> None:
    """One PNG with the ROC curve of each evaluation (``metrics["roc"]`` points, AUC in the legend).

    The legend sits below the axes, one entry per line, so it never covers a curve; the figure
    grows with the number of curves.
    """
    rows = max(1, len(curves))
    fig, ax = plt.subplots(figsize=(6, 5.2 + 0.24 * rows))
    try:
        for name, m in curves.items():
            ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], label=f"{name} (AUC {m['roc_auc']:.4f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
               xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        if curves:
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=1, fontsize="small",
                      frameon=False, borderaxespad=0.0)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
