"""PNG plots of a benchmark report (matplotlib, Agg canvas, no display needed):

- `accuracy_vs_latency.png`: task accuracy against decode latency (p50 ms per token, at each
  variant's best thread count), the Pareto front (no other variant is both faster and at least as
  accurate) drawn as a step line and its points ringed;
- `size_vs_accuracy.png`: file size (MB, log scale) against task accuracy.

Variants without an accuracy (not measured) are left out and named in the plot's footnote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

ACCURACY_VS_LATENCY = "accuracy_vs_latency.png"
SIZE_VS_ACCURACY = "size_vs_accuracy.png"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) that no other point dominates, by rising latency.
    Lower latency and higher accuracy are better; j dominates i when it is at least as good on both
    and strictly better on one (identical points do not dominate each other)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            xj <= x and yj >= y and (xj < x or yj > y) for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _points(report: dict) -> tuple[list[dict], list[str]]:
    """Variants with an accuracy and a best decode row, and the names of those without."""
    have, missing = [], []
    for v in report["variants"]:
        best = v.get("best") or {}
        ok = v.get("accuracy") is not None and best.get("p50_ms") is not None
        (have if ok else missing).append(v if ok else v["name"])
    return have, missing


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _footnote(fig, report: dict, missing: list[str]) -> None:
    host = report.get("host", {})
    text = f"host: {host.get('cpu_model', '?')}, {host.get('logical_cores', '?')} logical cores"
    if missing:
        text += f"; no accuracy: {', '.join(missing)}"
    fig.text(0.01, 0.01, text, fontsize=7, alpha=0.7)


def _label_points(ax, xs, ys, names) -> None:
    for x, y, name in zip(xs, ys, names):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def plot_accuracy_vs_latency(report: dict, path: Path) -> Path:
    """Accuracy against p50 decode latency, Pareto front marked; returns `path`."""
    have, missing = _points(report)
    fig, ax = _figure("Accuracy vs decode latency", "decode latency p50 (ms / token)", "task accuracy")
    xs = [v["best"]["p50_ms"] for v in have]
    ys = [v["accuracy"] for v in have]
    ax.scatter(xs, ys, s=30, color="tab:blue", zorder=3, label="variant")
    front = pareto_front(list(zip(xs, ys)))
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="tab:red", alpha=0.6, zorder=2)
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="tab:red", zorder=4, label="Pareto front")
    _label_points(ax, xs, ys, [v["name"] for v in have])
    if have:
        ax.legend(loc="lower right", fontsize=8)
    _footnote(fig, report, missing)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, format="png")
    return Path(path)


def plot_size_vs_accuracy(report: dict, path: Path) -> Path:
    """File size (MB, log scale) against accuracy; returns `path`."""
    have, missing = _points(report)
    fig, ax = _figure("Size vs accuracy", "file size (MB)", "task accuracy")
    xs = [v["size_bytes"] / 1e6 for v in have]
    ys = [v["accuracy"] for v in have]
    ax.scatter(xs, ys, s=30, color="tab:green", zorder=3)
    if xs and min(xs) > 0:
        ax.set_xscale("log")
    _label_points(ax, xs, ys, [v["name"] for v in have])
    _footnote(fig, report, missing)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, format="png")
    return Path(path)


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """Both plots into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_accuracy_vs_latency(report, out_dir / ACCURACY_VS_LATENCY),
        plot_size_vs_accuracy(report, out_dir / SIZE_VS_ACCURACY),
    ]
