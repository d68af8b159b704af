"""Small helpers shared by reports: reading metrics, plotting curves, markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import read_metrics


def mean_train_tokens_per_s(run_dir: str | Path) -> float:
    """Average of the training throughput the trainer logged (0 when nothing was logged)."""
    logs = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    return sum(r["tokens_per_s"] for r in logs) / max(1, len(logs))


def subplots(ncols: int, width: float):
    """A row of `ncols` axes on a headless backend (reports are written on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, 4))


def save_figure(fig, axes, path: str | Path, dpi: int = 110) -> Path:
    """Grid and legend on every axis, then write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_loss_curves(runs: dict[str, str | Path], out_path: str | Path) -> Path:
    """Training and validation next-token loss of several runs against tokens seen."""
    fig, axes = subplots(2, 11)
    for name, run_dir in runs.items():
        records = read_metrics(run_dir)
        train = [r for r in records if r["split"] == "train"]
        val = [r for r in records if r["split"] == "val"]
        axes[0].plot([r["tokens"] for r in train], [r["per_distance"][0] for r in train], label=f"{name} next-token")
        if len(train) and len(train[0]["per_distance"]) > 1:
            axes[0].plot([r["tokens"] for r in train], [r["loss"] for r in train], "--", label=f"{name} FTP objective")
        axes[1].plot([r["tokens"] for r in val], [r["next_token_loss"] for r in val], "o-", label=name)
    axes[0].set(title="training loss", xlabel="tokens", ylabel="cross-entropy (nats)")
    axes[1].set(title="validation next-token loss", xlabel="tokens", ylabel="cross-entropy (nats)")
    return save_figure(fig, axes, out_path)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
