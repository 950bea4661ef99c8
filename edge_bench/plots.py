"""PNG plots of a benchmark report (matplotlib, Agg canvas, no display needed):

- `accuracy_vs_latency.png`: task accuracy against decode latency (p50 ms per token, at each
  variant's best thread count), with the 95% Wilson interval of each accuracy as an error bar, the
  Pareto front (no other variant is both faster and at least as accurate) drawn as a step line and
  its points ringed. The front is computed from the point estimates, and the caption says so: where
  error bars overlap, the data do not separate the variants.
- `size_vs_accuracy.png`: file size (MB, log scale) against task accuracy, with the same error bars.

Labels are placed by `place_labels`: for each point, the nearest free spot (no other label, marker
or the plot's edge in the way; an error bar only when that saves a long way) on rings around it,
joined to the point by a thin leader line when it had to move away. Points with a close neighbour
always stand their labels off, on the side away from it, with a leader line, so that two labels
never sit beside two indistinguishable dots. Variants without an accuracy (not measured) are left
out and named in the plot's footnote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from edge_bench.schema import Report, VariantResult, as_report

ACCURACY_VS_LATENCY = "accuracy_vs_latency.png"
SIZE_VS_ACCURACY = "size_vs_accuracy.png"
FONT_SIZE = 7
RADII_PX = (6, 12, 20, 30, 44, 60, 80, 105, 135)
ANGLES_DEG = (30, -30, 150, -150, 0, 180, 90, -90, 60, -60, 120, -120)
CLUSTER_PX = 16
"""Points closer than this (pixels) are a cluster: their labels stand off, joined by leader lines."""


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


Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels."""


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    anchors: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    area: Box,
    obstacles: Sequence[Box] = (),
    soft: Sequence[Box] = (),
    pad: float = 2.0,
) -> list[tuple[float, float]]:
    """Centres (pixels) for labels of `sizes` (w, h) near their `anchors`, inside `area`, overlapping
    neither each other nor the `obstacles` (markers), nor if possible the `soft` ones (error bars):
    the cheapest spot on rings of RADII_PX x ANGLES_DEG, where overlapping a label costs most, then a
    marker, then an error bar, then distance from the point."""
    placed: list[Box] = []
    centres = []
    for i, ((ax, ay), (w, h)) in enumerate(zip(anchors, sizes)):
        best, best_cost = None, math.inf
        # a point with a neighbour closer than CLUSTER_PX gets its label further out, on the side away
        # from that neighbour, with a leader line
        near = [b for j, b in enumerate(anchors) if j != i and math.hypot(ax - b[0], ay - b[1]) < CLUSTER_PX]
        angles, radii = ANGLES_DEG, RADII_PX
        if near:
            mx, my = sum(x for x, _ in near) / len(near), sum(y for _, y in near) / len(near)
            away = math.atan2(ay - my, ax - mx)
            angles = tuple(sorted(ANGLES_DEG, key=lambda d: -math.cos(math.radians(d) - away)))
            radii = RADII_PX[3:]
        for r in radii:
            for deg in angles:
                c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
                cx, cy = ax + c * (r + w / 2), ay + s * (r + h / 2)
                box = (cx - w / 2 - pad, cy - h / 2 - pad, cx + w / 2 + pad, cy + h / 2 + pad)
                if box[0] < area[0] or box[2] > area[2] or box[1] < area[1] or box[3] > area[3]:
                    continue
                cost = (
                    100 * sum(_overlap(box, p) for p in placed)
                    + 10 * sum(_overlap(box, o) for o in obstacles)
                    + 1.5 * sum(_overlap(box, o) for o in soft)
                    + r / 30  # nearer is better: a label far away is hard to match with its point
                )
                if cost < best_cost:
                    best, best_cost = (cx, cy, box), cost
        if best is None:  # nowhere inside the area: right of the point
            best = (ax + 6 + w / 2, ay, (ax + 6, ay - h / 2, ax + 6 + w, ay + h / 2))
        centres.append((best[0], best[1]))
        placed.append(best[2])
    return centres


def _points(report: Report) -> tuple[list[VariantResult], list[str]]:
    """Variants with an accuracy and a best decode row, and the names of those without."""
    have, missing = [], []
    for v in report.variants:
        ok = v.accuracy is not None and v.best is not None and v.best.p50_ms is not None
        (have if ok else missing).append(v if ok else v.name)
    return have, missing


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _captions(fig, report: Report, missing: list[str], caption: str) -> None:
    host = report.host
    counts = {v.n_questions for v in report.variants if v.accuracy is not None}
    text = f"host: {host.cpu_model or '?'}, {host.logical_cores or '?'} logical cores"
    if counts:
        text += (
            f"; {max(counts)} questions" if len(counts) == 1 else f"; {min(counts)}-{max(counts)} questions"
        )
    if missing:
        text += f"; no accuracy: {', '.join(missing)}"
    fig.text(0.01, 0.115, caption, fontsize=7, va="top", wrap=True)
    fig.text(0.01, 0.012, text, fontsize=6.5, alpha=0.7)


def _plain_log_ticks(axis) -> None:
    """Tick labels on a log axis as plain numbers (6, 10, 20), not 6 x 10^0."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda x, _: f"{x:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def _ci(v: VariantResult) -> tuple[float, float]:
    lo, hi = v.accuracy_ci or (v.accuracy, v.accuracy)
    return lo, hi


def _error_bars(ax, xs, ys, have, color: str) -> None:
    lo = [max(0.0, y - _ci(v)[0]) for y, v in zip(ys, have)]
    hi = [max(0.0, _ci(v)[1] - y) for y, v in zip(ys, have)]
    ax.errorbar(
        xs,
        ys,
        yerr=[lo, hi],
        fmt="o",
        ms=5,
        color=color,
        ecolor=color,
        elinewidth=1,
        capsize=3,
        alpha=0.85,
        zorder=3,
        label="variant (95% Wilson interval)",
    )


def _label(ax, fig, xs, ys, cis, names) -> None:
    """Every point's name, placed by `place_labels`, with a leader line when it had to move."""
    renderer = fig.canvas.get_renderer()
    sizes = []
    for name in names:
        t = ax.text(0, 0, name, fontsize=FONT_SIZE)
        bb = t.get_window_extent(renderer)
        sizes.append((bb.width, bb.height))
        t.remove()
    pts = [tuple(ax.transData.transform((x, y))) for x, y in zip(xs, ys)]
    a = ax.get_window_extent(renderer)
    markers = [(px - 5, py - 5, px + 5, py + 5) for px, py in pts]
    bars = []
    for x, (lo, hi) in zip(xs, cis):
        (bx, by0), (_, by1) = ax.transData.transform([(x, lo), (x, hi)])
        bars.append((bx - 4, by0, bx + 4, by1))
    centres = place_labels(pts, sizes, (a.x0, a.y0, a.x1, a.y1), markers, bars)
    for (px, py), (cx, cy), (w, h), name in zip(pts, centres, sizes, names):
        # a leader line unless the label sits right beside its point (the first ring)
        far = math.hypot(max(abs(cx - px) - w / 2, 0), max(abs(cy - py) - h / 2, 0)) > RADII_PX[0] + 3
        ax.annotate(
            name,
            (px, py),
            xycoords="figure pixels",
            xytext=(cx, cy),
            textcoords="figure pixels",
            fontsize=FONT_SIZE,
            ha="center",
            va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.45", "shrinkA": 1, "shrinkB": 4}
            if far
            else None,
            zorder=5,
        )


def _y_limits(ax, have) -> None:
    lows, highs = [_ci(v)[0] for v in have], [_ci(v)[1] for v in have]
    if lows:
        lo, hi = min(lows), max(highs)
        margin = max(0.05, (hi - lo) * 0.25)
        ax.set_ylim(max(-0.02, lo - margin), min(1.02, hi + margin))


def plot_accuracy_vs_latency(report: Report | dict, path: Path) -> Path:
    """Accuracy (with error bars) against p50 decode latency, Pareto front marked; returns `path`."""
    report = as_report(report)
    have, missing = _points(report)
    fig, ax = _figure("Accuracy vs decode latency", "decode latency p50 (ms / token)", "task accuracy")
    xs = [v.best.p50_ms for v in have]
    ys = [v.accuracy for v in have]
    _error_bars(ax, xs, ys, have, "tab:blue")
    front = pareto_front(list(zip(xs, ys)))
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="tab:red", alpha=0.6, zorder=2)
        ax.scatter(
            fx,
            fy,
            s=140,
            facecolors="none",
            edgecolors="tab:red",
            zorder=4,
            label="Pareto front (point estimates)",
        )
    chosen = report.recommendation.variant
    for x, y, v in zip(xs, ys, have):
        if v.name == chosen:
            ax.scatter(
                [x], [y], marker="*", s=220, color="gold", edgecolors="k", zorder=6, label="recommended"
            )
    _y_limits(ax, have)
    if xs and min(xs) > 0 and max(xs) / min(xs) > 4:  # a wide spread: log scale keeps the fast ones apart
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.3)  # room for labels left of the fastest
        ax.set_xlabel("decode latency p50 (ms / token, log scale)")
        _plain_log_ticks(ax.xaxis)
    elif xs:
        span = (max(xs) - min(xs)) or max(xs) or 1.0
        ax.set_xlim(max(0.0, min(xs) - 0.12 * span), max(xs) + 0.12 * span)
    if xs:
        ax.legend(loc="lower right", fontsize=7)
    caption = (
        "Error bars: 95% Wilson intervals of each accuracy. The Pareto front is computed from the point "
        "estimates: where error bars overlap, these questions do not separate the variants (the "
        "recommendation uses the paired interval against fp32 instead). Latency: p50 at each variant's "
        "fastest thread count."
    )
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    _label(ax, fig, xs, ys, [_ci(v) for v in have], [v.name for v in have])
    _captions(fig, report, missing, caption)
    fig.savefig(path, format="png")
    return Path(path)


def plot_size_vs_accuracy(report: Report | dict, path: Path) -> Path:
    """File size (MB, log scale) against accuracy (with error bars); returns `path`."""
    report = as_report(report)
    have, missing = _points(report)
    fig, ax = _figure("Size vs accuracy", "file size (MB)", "task accuracy")
    xs = [v.size_bytes / 1e6 for v in have]
    ys = [v.accuracy for v in have]
    _error_bars(ax, xs, ys, have, "tab:green")
    if xs and min(xs) > 0:
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.35, max(xs) * 1.35)
        _plain_log_ticks(ax.xaxis)
    _y_limits(ax, have)
    caption = "Error bars: 95% Wilson intervals of each accuracy; size: the files the runtime loads."
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    _label(ax, fig, xs, ys, [_ci(v) for v in have], [v.name for v in have])
    _captions(fig, report, missing, caption)
    fig.savefig(path, format="png")
    return Path(path)


def write_plots(report: Report | dict, out_dir: Path) -> list[Path]:
    """Both plots into `out_dir`; returns their paths."""
    report, out_dir = as_report(report), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_accuracy_vs_latency(report, out_dir / ACCURACY_VS_LATENCY),
        plot_size_vs_accuracy(report, out_dir / SIZE_VS_ACCURACY),
    ]
