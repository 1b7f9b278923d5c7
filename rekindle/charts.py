"""Small server-side SVG charts for the staff dashboard: bars (stacked or grouped), horizontal bars, lines.

Each function returns an inline ``<svg>`` as a ``SafeString`` built only with
``format_html``, so labels (workflow names, node URLs) are escaped like any other
text in a template. No JavaScript and nothing from a CDN: hovering a bar or a point
shows its value through the SVG ``<title>`` element, and every chart has a text
label for screen readers. The styling lives in ``static/rekindle/admin.css``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# Status colours used across the console (also in admin.css for the status badges).
STATUS_COLORS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "canceled": "#757575",
    "running": "#1565c0",
    "queued": "#f9a825",
}
PALETTE = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f")

_FONT = 11
_LEFT = 56
_RIGHT = 12
_TOP = 28
_BOTTOM = 44


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    color: str = ""


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``maximum`` (1, 2 or 5 times a power of ten apart)."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    top = math.ceil(maximum / step - 1e-9) * step
    return [round(i * step, 10) for i in range(round(top / step) + 1)]


def format_number(value: float, unit: str = "") -> str:
    if unit == "%":
        return f"{value:.0f}%" if value == int(value) else f"{value:.1f}%"
    if value == int(value):
        text = f"{int(value):,}"
    elif abs(value) >= 10:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}"
    return f"{text} {unit}".rstrip() if unit else text


def _num(value: object) -> object:
    # format_html escapes every argument to a string first, so numbers are formatted here.
    return f"{value:.1f}" if isinstance(value, float) else value


def _join(template: str, rows: Iterable[Sequence[object]]) -> SafeString:
    return format_html_join("", template, (tuple(_num(v) for v in row) for row in rows))


def _colors(series: Sequence[Series]) -> list[str]:
    return [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]


def _legend(series: Sequence[Series], width: float) -> SafeString:
    colors = _colors(series)
    items = []
    x = float(_LEFT)
    for s, color in zip(series, colors, strict=True):
        items.append((x, color, x + 14, s.name))
        x += 24 + 7 * len(s.name)
    return _join(
        '<rect x="{}" y="6" width="10" height="10" fill="{}"/><text x="{}" y="15" class="chart-legend">{}</text>',
        items,
    )


def _svg(width: int, height: int, label: str, body: SafeString) -> SafeString:
    return format_html(
        '<svg class="rk-chart" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg" font-size="{}">{}</svg>',
        width,
        height,
        label,
        _FONT,
        body,
    )


def _y_axis(ticks: Sequence[float], top_value: float, plot_h: float, width: float, unit: str) -> SafeString:
    rows = []
    for tick in ticks:
        y = _TOP + plot_h - (tick / top_value) * plot_h
        rows.append((_LEFT, y, width - _RIGHT, y, _LEFT - 6, y + 4, format_number(tick, unit)))
    return _join(
        '<line x1="{}" y1="{}" x2="{}" y2="{}" class="chart-grid"/>'
        '<text x="{}" y="{}" text-anchor="end" class="chart-axis">{}</text>',
        rows,
    )


def _x_labels(labels: Sequence[str], xs: Sequence[float], baseline: float) -> SafeString:
    # Thin the labels out so that at most ~10 are printed; every bar keeps its tooltip.
    every = max(1, math.ceil(len(labels) / 10))
    rows = [(x, baseline + 16, label) for i, (x, label) in enumerate(zip(xs, labels, strict=True)) if i % every == 0]
    return _join('<text x="{}" y="{}" text-anchor="middle" class="chart-axis">{}</text>', rows)


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    stacked: bool = True,
    width: int = 720,
    height: int = 240,
) -> SafeString:
    """Vertical bars, one group per label; the series stacked on each other or side by side."""
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    if stacked:
        peak = max((sum(s.values[i] for s in series) for i in range(len(labels))), default=0.0)
    else:
        peak = max((v for s in series for v in s.values), default=0.0)
    ticks = nice_ticks(peak)
    top_value = ticks[-1] or 1.0
    slot = plot_w / max(len(labels), 1)
    bar_w = slot * 0.7 / (1 if stacked else max(len(series), 1))
    colors = _colors(series)
    baseline = _TOP + plot_h

    rects = []
    centers = []
    for i, label in enumerate(labels):
        x0 = _LEFT + i * slot + slot * 0.15
        centers.append(_LEFT + i * slot + slot / 2)
        stack = 0.0
        for j, (s, color) in enumerate(zip(series, colors, strict=True)):
            value = float(s.values[i])
            h = (value / top_value) * plot_h
            if stacked:
                y = baseline - ((stack + value) / top_value) * plot_h
                x = x0
                stack += value
            else:
                y = baseline - h
                x = x0 + j * bar_w
            if value > 0:
                rects.append((x, y, bar_w, h, color, label, s.name, format_number(value, unit)))

    body = format_html(
        "{}{}{}{}",
        _legend(series, width),
        _y_axis(ticks, top_value, plot_h, width, unit),
        _join(
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} · {}: {}</title></rect>',
            rects,
        ),
        _x_labels(labels, centers, baseline),
    )
    return _svg(width, height, title, body)


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    maximum: float | None = None,
    width: int = 720,
    height: int = 200,
) -> SafeString:
    """One line per series over the labels (days); ``nan`` values leave a gap (no data that day)."""
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    finite = [v for s in series for v in s.values if math.isfinite(v)]
    ticks = nice_ticks(maximum if maximum is not None else max(finite, default=0.0))
    top_value = ticks[-1] or 1.0
    step = plot_w / max(len(labels) - 1, 1)
    xs = [_LEFT + i * step for i in range(len(labels))]
    baseline = _TOP + plot_h
    colors = _colors(series)

    paths = []
    points = []
    for s, color in zip(series, colors, strict=True):
        segments: list[list[str]] = [[]]
        for i, value in enumerate(s.values):
            if not math.isfinite(value):
                segments.append([])
                continue
            y = baseline - (value / top_value) * plot_h
            segments[-1].append(f"{xs[i]:.1f},{y:.1f}")
            points.append((xs[i], y, color, labels[i], s.name, format_number(value, unit)))
        for segment in segments:
            if len(segment) > 1:
                paths.append((" ".join(segment), color))

    body = format_html(
        "{}{}{}{}{}",
        _legend(series, width),
        _y_axis(ticks, top_value, plot_h, width, unit),
        _join('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', paths),
        _join(
            '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{} · {}: {}</title></circle>',
            points,
        ),
        _x_labels(labels, xs, baseline),
    )
    return _svg(width, height, title, body)


def hbar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    width: int = 720,
    label_width: int = 220,
    row_height: int = 18,
) -> SafeString:
    """Horizontal bars side by side per label: for long labels (workflow names, node URLs)."""
    groups = max(len(labels), 1)
    bar_h = row_height
    group_h = bar_h * max(len(series), 1) + 10
    plot_w = width - label_width - 70
    height = _TOP + groups * group_h + 8
    peak = max((v for s in series for v in s.values), default=0.0)
    top_value = nice_ticks(peak)[-1] or 1.0
    colors = _colors(series)

    rows = []
    label_rows = []
    for i, label in enumerate(labels):
        y0 = _TOP + i * group_h
        shown = label if len(label) <= 34 else label[:16] + "…" + label[-16:]
        label_rows.append((label_width - 8, y0 + group_h / 2, label, shown))
        for j, (s, color) in enumerate(zip(series, colors, strict=True)):
            value = float(s.values[i])
            w = (value / top_value) * plot_w
            y = y0 + j * bar_h
            rows.append(
                (
                    label_width,
                    y,
                    max(w, 1.0),
                    bar_h - 3,
                    color,
                    label,
                    s.name,
                    format_number(value, unit),
                    label_width + w + 4,
                    y + bar_h - 6,
                    format_number(value, unit),
                )
            )

    body = format_html(
        "{}{}{}",
        _legend(series, width),
        _join(
            '<text x="{}" y="{}" text-anchor="end" class="chart-axis"><title>{}</title>{}</text>',
            label_rows,
        ),
        _join(
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} · {}: {}</title></rect>'
            '<text x="{}" y="{}" class="chart-value">{}</text>',
            rows,
        ),
    )
    return _svg(width, height, title, body)
