"""The pictures a training run leaves behind: learning curves and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fileio import atomic_write  # noqa: E402


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("test", "--")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, marker="o", ms=3, label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_acc"] for h in history], style, marker="o", ms=3, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save(fig, Path(path))


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> None:
    """Rows: true class, columns: predicted class; counts written in the cells when there are few classes."""
    m = np.asarray(confusion)
    k = len(classes)
    size = min(4 + 0.45 * k, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=90 if max(map(len, classes)) > 3 else 0)
        ax.set_yticks(range(k), classes)
        threshold = m.max() / 2 if m.size else 0
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        str(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if m[i, j] > threshold else "black",
                    )
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    _save(fig, Path(path))
