"""A small server-rendered SVG line chart of one metric across versions.

Pure Python, no JavaScript: `metric_chart()` returns an SVG string in which every piece of
user-supplied text (the metric name, labels) is escaped, so it can be marked safe.
"""

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 28, 48
INSET = 24  # keeps the first and last points off the plot's edges
MAX_LABELS = 16
MAX_VALUE_LABELS = 12
ACCENT = "#3b5bdb"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _tick_label(value: float) -> str:
    return f"{round(value, 10):.6g}"


def _nice_step(span: float, count: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about `count` intervals."""
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _axis(values: list[float], count: int = 4) -> tuple[float, float, list[float]]:
    """Axis bounds and round tick values that enclose `values`."""
    low, high = min(values), max(values)
    if high == low:  # a flat line sits in the middle instead of on an edge
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    step = _nice_step(high - low, count)
    start, end = math.floor(low / step) * step, math.ceil(high / step) * step
    ticks = [start + step * index for index in range(round((end - start) / step) + 1)]
    return start, end, ticks


def metric_chart(points: Sequence[tuple[str, float]], metric: str) -> str:
    """An SVG of `metric` over `points` — (label, value) pairs in version order.

    Returns "" when there is nothing to draw.
    """
    points = [(str(label), float(value)) for label, value in points if _finite(value)]
    if not points:
        return ""
    values = [value for _, value in points]
    low, high, ticks = _axis(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        if len(points) == 1:
            return LEFT + plot_w / 2
        return LEFT + INSET + (plot_w - 2 * INSET) * index / (len(points) - 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    name = escape(metric)
    first, last = points[0][0], points[-1][0]
    summary = escape(
        f"{metric} from {first} to {last}: "
        + ", ".join(f"{label} = {_number(value)}" for label, value in points)
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{summary}" font-family="system-ui, sans-serif" font-size="13">',
        f"<title>{name} by version</title>",
    ]
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" '
            'stroke="#e3e6eb" stroke-width="1"/>'
            f'<text x="{LEFT - 8}" y="{ty + 4:.1f}" text-anchor="end" fill="#5d6878">'
            f"{escape(_tick_label(tick))}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'stroke="#c5ccd6" stroke-width="1"/>'
    )
    coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    if len(points) > 1:
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{ACCENT}" stroke-width="2.5" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )
    every = max(1, math.ceil(len(points) / MAX_LABELS))
    for index, (label, value) in enumerate(points):
        px, py = x(index), y(value)
        text = escape(label)
        parts.append(
            f"<g><title>{text}: {name} = {escape(_number(value))}</title>"
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="#fff" stroke="{ACCENT}" '
            'stroke-width="2.5"/></g>'
        )
        if len(points) <= MAX_VALUE_LABELS:
            parts.append(
                f'<text x="{px:.1f}" y="{py - 10:.1f}" text-anchor="middle" fill="#5d6878" '
                f'font-size="11">{escape(_number(value))}</text>'
            )
        if index % every == 0 or index == len(points) - 1:
            parts.append(
                f'<text x="{px:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" '
                f'fill="#1c2430">{text}</text>'
            )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'fill="#5d6878">version</text></svg>'
    )
    return "".join(parts)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
