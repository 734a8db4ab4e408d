"""A small server-rendered SVG line chart of one metric across versions.

Pure Python, no JavaScript: `metric_chart()` returns an SVG string in which every piece of
user-supplied text (the metric name, labels) is escaped, so it can be marked safe.
"""

import math
from collections.abc import Sequence
from html import escape
from itertools import pairwise

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


# --- explanations: per-feature importance as horizontal bars ----------------------------

BAR_ROW = 26
LABEL_W = 200
VALUE_W = 80
MAX_FEATURES = 40  # a longer tail is summarised in a line, the table has every feature
LIVE_COLOUR = "#98a2b3"
JUMP_FILL = "#fff4d6"
# A feature's importance "jumped" when it moved by more than this share of the largest
# importance in either version, and by more than its combined spread (std).
JUMP_SHARE = 0.1


def _importances(explanations: dict | None) -> dict[str, tuple[float, float]]:
    features = (explanations or {}).get("features") or {}
    return {
        str(name): (float(item.get("importance", 0.0)), float(item.get("std", 0.0) or 0.0))
        for name, item in features.items()
        if isinstance(item, dict) and _finite(item.get("importance"))
    }


def importance_rows(candidate: dict | None, live: dict | None = None) -> list[dict]:
    """One row per feature (most important first): importance and std in each version,
    the change, and whether it jumped. With no `live`, only the candidate's columns."""
    new, old = _importances(candidate), _importances(live)
    names = sorted(
        set(new) | set(old),
        key=lambda n: (-max(abs(new.get(n, (0, 0))[0]), abs(old.get(n, (0, 0))[0])), n),
    )
    top = max([abs(v) for v, _ in [*new.values(), *old.values()]] or [0.0])
    rows = []
    for name in names:
        value, std = new.get(name, (None, None))
        before, before_std = old.get(name, (None, None))
        delta = jumped = None
        if live is not None:
            delta = (value or 0.0) - (before or 0.0)
            spread = math.hypot(std or 0.0, before_std or 0.0)
            jumped = top > 0 and abs(delta) > JUMP_SHARE * top and abs(delta) > spread
        rows.append(
            {
                "name": name,
                "importance": value,
                "std": std,
                "live": before,
                "live_std": before_std,
                "delta": delta,
                "jumped": bool(jumped),
            }
        )
    return rows


def importance_chart(rows: list[dict], compare: bool = False, title: str = "") -> str:
    """Horizontal bars of importance (± std whiskers), one group per feature.

    With `compare`, each feature gets two bars, the live version's (grey) above the
    candidate's (accent), and a jumped feature's row is shaded. "" when nothing to draw.
    """
    rows = rows[:MAX_FEATURES]
    if not rows:
        return ""
    per_row = BAR_ROW * (2 if compare else 1) + 8
    height = TOP + per_row * len(rows) + BOTTOM
    plot_left, plot_right = LABEL_W, WIDTH - VALUE_W
    values = [0.0]
    for row in rows:
        for key, spread in (("importance", "std"), ("live", "live_std")):
            if row.get(key) is not None:
                values += [row[key] - (row[spread] or 0), row[key] + (row[spread] or 0)]
    low, high, ticks = _axis(values)
    low, high = min(low, 0.0), max(high, 0.0)

    def x(value: float) -> float:
        return plot_left + (plot_right - plot_left) * (value - low) / (high - low)

    label = escape(title or "Feature importance")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{label}" font-family="system-ui, sans-serif" font-size="13" '
        'class="importance-chart">',
        f"<title>{label}</title>",
    ]
    for tick in ticks:
        if low <= tick <= high:
            tx = x(tick)
            parts.append(
                f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{TOP - 6}" y2="{height - BOTTOM}" '
                'stroke="#e3e6eb"/>'
                f'<text x="{tx:.1f}" y="{height - BOTTOM + 18}" text-anchor="middle" '
                f'fill="#5d6878">{escape(_tick_label(tick))}</text>'
            )
    zero = x(0.0)
    series = [("live", "live_std", LIVE_COLOUR, "live"), ("importance", "std", ACCENT, "")]
    if not compare:
        series = series[1:]
    for index, row in enumerate(rows):
        top_y = TOP + index * per_row
        name = escape(row["name"])
        jumped = compare and row.get("jumped")
        parts.append(f'<g class="feature" data-feature="{name}"{" data-jumped" if jumped else ""}>')
        if jumped:
            parts.append(
                f'<rect x="0" y="{top_y - 4}" width="{WIDTH}" height="{per_row}" '
                f'fill="{JUMP_FILL}"/>'
            )
        parts.append(
            f'<text x="{plot_left - 10}" y="{top_y + per_row / 2 + 1:.1f}" text-anchor="end" '
            f'fill="#1c2430">{name}</text>'
        )
        for offset, (key, spread_key, colour, which) in enumerate(series):
            value = row.get(key)
            y = top_y + offset * BAR_ROW
            if value is None:
                parts.append(
                    f'<text x="{zero + 6:.1f}" y="{y + BAR_ROW / 2 + 4:.1f}" fill="#5d6878" '
                    f'font-size="11">{"not in live" if which else "not in candidate"}</text>'
                )
                continue
            spread = row.get(spread_key) or 0.0
            left, right = sorted((zero, x(value)))
            tip = f"{row['name']}: {'live ' if which else ''}importance {_number(value)}"
            tip += f" ± {_number(spread)}" if spread else ""
            parts.append(
                f'<g class="bar{" bar-live" if which else ""}"><title>{escape(tip)}</title>'
                f'<rect x="{left:.1f}" y="{y + 3}" width="{max(right - left, 1):.1f}" '
                f'height="{BAR_ROW - 6}" rx="2" fill="{colour}"/></g>'
            )
            if spread:
                a, b = x(value - spread), x(value + spread)
                mid = y + BAR_ROW / 2
                parts.append(
                    f'<path d="M{a:.1f},{mid:.1f}H{b:.1f}M{a:.1f},{mid - 5:.1f}V{mid + 5:.1f}'
                    f'M{b:.1f},{mid - 5:.1f}V{mid + 5:.1f}" stroke="#1c2430" stroke-width="1.2" '
                    'fill="none"/>'
                )
            parts.append(
                f'<text x="{plot_right + 8}" y="{y + BAR_ROW / 2 + 4:.1f}" fill="#5d6878" '
                f'font-size="11">{escape(_number(value))}</text>'
            )
        parts.append("</g>")
    parts.append(
        f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{TOP - 6}" y2="{height - BOTTOM}" '
        'stroke="#5d6878"/>'
    )
    if compare:
        parts.append(_legend([("live", LIVE_COLOUR), ("candidate", ACCENT)], TOP - 14))
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: list[tuple[str, str]], y: float) -> str:
    parts, x = [], LEFT
    for text, colour in items:
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="12" height="12" rx="2" fill="{colour}"/>'
            f'<text x="{x + 18}" y="{y + 1}" fill="#1c2430">{escape(text)}</text>'
        )
        x += 28 + 8 * len(text)
    return '<g class="legend">' + "".join(parts) + "</g>"


# --- monitoring: time series and distributions ---------------------------------------

# Monitoring charts sit two to a row: a smaller canvas keeps their text readable.
SMALL_W, SMALL_H = 640, 260
SERIES_COLOURS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad"]


def series_chart(
    labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], title: str
) -> str:
    """Lines over time windows: `labels` name the windows (x), each series is a (name,
    values) pair with one value or None (a gap) per window. "" when nothing to draw."""
    labels = [str(label) for label in labels]
    values = [v for _, vs in series for v in vs if _finite(v)]
    if not labels or not values:
        return ""
    low, high, ticks = _axis([*values, 0.0] if min(values) >= 0 else values)
    plot_w, plot_h = SMALL_W - LEFT - RIGHT, SMALL_H - TOP - BOTTOM

    def x(index: int) -> float:
        if len(labels) == 1:
            return LEFT + plot_w / 2
        return LEFT + INSET + (plot_w - 2 * INSET) * index / (len(labels) - 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    name = escape(title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SMALL_W} {SMALL_H}" role="img" '
        f'aria-label="{name}" font-family="system-ui, sans-serif" font-size="13" '
        'class="series-chart">',
        f"<title>{name}</title>",
    ]
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{SMALL_W - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" '
            'stroke="#e3e6eb"/>'
            f'<text x="{LEFT - 8}" y="{ty + 4:.1f}" text-anchor="end" fill="#5d6878">'
            f"{escape(_tick_label(tick))}</text>"
        )
    legend = []
    for number, (series_name, series_values) in enumerate(series):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        dash = ' stroke-dasharray="6 4"' if series_name.startswith("offline") else ""
        legend.append((series_name, colour))
        parts.append(f'<g class="series" data-series="{escape(series_name)}">')
        run: list[str] = []
        for index, value in enumerate([*series_values, None]):
            if _finite(value):
                run.append(f"{x(index):.1f},{y(value):.1f}")
                continue
            if len(run) > 1:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                    f'stroke-width="2.2" stroke-linejoin="round"{dash}/>'
                )
            run = []
        for index, value in enumerate(series_values):
            if _finite(value):
                tip = f"{labels[index]}: {series_name} = {_number(value)}"
                parts.append(
                    f"<g><title>{escape(tip)}</title>"
                    f'<circle cx="{x(index):.1f}" cy="{y(value):.1f}" r="3" fill="{colour}"/></g>'
                )
        parts.append("</g>")
    every = max(1, math.ceil(len(labels) / 8))
    for index, label in enumerate(labels):
        last = len(labels) - 1
        if (index % every == 0 and last - index >= every) or index == last:
            anchor = "end" if index == len(labels) - 1 and index else "middle"
            parts.append(
                f'<text x="{x(index):.1f}" y="{SMALL_H - BOTTOM + 18}" text-anchor="{anchor}" '
                f'fill="#5d6878" font-size="11">{escape(label)}</text>'
            )
    parts.append(_legend(legend, SMALL_H - 10))
    parts.append("</svg>")
    return "".join(parts)


def _distribution(value: dict | None) -> tuple[list[str], list[float]]:
    """Bin labels and shares (0-1) of a {"edges", "counts"} or {"values"} distribution."""
    value = value or {}
    if "edges" in value and "counts" in value:
        edges, counts = value["edges"], value["counts"]
        labels = [f"{_number(a)} to {_number(b)}" for a, b in pairwise(edges)]
    elif "values" in value:
        labels, counts = [str(k) for k in value["values"]], list(value["values"].values())
    else:
        return [], []
    counts = [float(c) if _finite(c) else 0.0 for c in counts][: len(labels)]
    total = sum(counts)
    return labels[: len(counts)], [c / total if total else 0.0 for c in counts]


def distribution_chart(baseline: dict | None, live: dict | None, title: str) -> str:
    """The baseline's and the live distribution side by side, as shares per bin or value."""
    labels, base = _distribution(baseline)
    live_labels, now = _distribution(live)
    if not labels and not live_labels:
        return ""
    if not labels:
        labels, base = live_labels, [0.0] * len(live_labels)
    if live_labels and live_labels != labels:  # categories: line the live ones up by name
        shares = dict(zip(live_labels, now, strict=True))
        labels += [label for label in live_labels if label not in labels]
        base += [0.0] * (len(labels) - len(base))
        now = [shares.get(label, 0.0) for label in labels]
    now = now or [0.0] * len(labels)
    plot_w, plot_h = SMALL_W - LEFT - RIGHT, SMALL_H - TOP - BOTTOM
    top = max([*base, *now, 0.01])
    _, high, ticks = _axis([0.0, top])
    slot = plot_w / len(labels)
    bar = max(1.0, min(28.0, slot * 0.38))
    name = escape(title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SMALL_W} {SMALL_H}" role="img" '
        f'aria-label="{name}" font-family="system-ui, sans-serif" font-size="13" '
        'class="distribution-chart">',
        f"<title>{name}</title>",
    ]

    def y(share: float) -> float:
        return TOP + plot_h * (1 - share / high)

    for tick in ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{SMALL_W - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#e3e6eb"/>'
            f'<text x="{LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#5d6878">'
            f"{escape(f'{tick:.0%}')}</text>"
        )
    every = max(1, math.ceil(len(labels) / 10))
    edges = (baseline or {}).get("edges") or []
    numeric = len(edges) == len(labels) + 1
    for index, label in enumerate(labels):
        centre = LEFT + slot * (index + 0.5)
        for offset, (which, share, colour) in enumerate(
            (("baseline", base[index], LIVE_COLOUR), ("live", now[index], ACCENT))
        ):
            bx = centre - bar + offset * bar
            tip = f"{label}: {which} {share:.1%}"
            parts.append(
                f'<g class="bar bar-{which}"><title>{escape(tip)}</title>'
                f'<rect x="{bx:.1f}" y="{y(share):.1f}" width="{bar:.1f}" '
                f'height="{max(y(0) - y(share), 0):.1f}" fill="{colour}"/></g>'
            )
        if numeric:  # bin edges under the boundaries; the range is in each bar's title
            texts = [(LEFT + slot * index, edges[index])]
            if index == len(labels) - 1:
                texts.append((LEFT + slot * len(labels), edges[-1]))
            for tx, edge in texts if index % every == 0 or index == len(labels) - 1 else []:
                parts.append(
                    f'<text x="{tx:.1f}" y="{SMALL_H - BOTTOM + 16}" text-anchor="middle" '
                    f'fill="#5d6878" font-size="11">{escape(_number(edge))}</text>'
                )
        elif index % every == 0:
            parts.append(
                f'<text x="{centre:.1f}" y="{SMALL_H - BOTTOM + 16}" text-anchor="middle" '
                f'fill="#5d6878" font-size="11">{escape(label[:12])}</text>'
            )
    parts.append(_legend([("baseline", LIVE_COLOUR), ("live", ACCENT)], SMALL_H - 10))
    parts.append("</svg>")
    return "".join(parts)
