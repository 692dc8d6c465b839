"""Small charts drawn on the server as inline SVG: no script, no font or CDN to fetch, and the
page works the same behind a firewall. Every chart has a `<title>`/`<desc>` for screen
readers, each point or bar its own `<title>` (a tooltip), and every text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 14, 30   # plot margins (axis labels live there)
LEGEND_ROW = 18
# Colour-blind-friendly (Okabe-Ito), dark enough on white.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c564b",
           "#333333")


def nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ at or above `value` (at least 1): a round top for the axis."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return max(m * step, 1)
        step *= 10


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""


def _legend(names: Sequence[str], y0: float) -> tuple[list[str], float]:
    """Legend entries laid out in rows across the width; returns the parts and the next y."""
    parts, x, y = [], float(LEFT), y0
    for i, name in enumerate(names):
        label = name if len(name) <= 28 else name[:27] + "…"
        w = 22 + 7.2 * len(label)   # rough text width; system-ui at 12px
        if x + w > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + LEGEND_ROW
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="12" height="12" rx="2" '
                     f'fill="{colour}"/><text x="{x + 17:.0f}" y="{y + 1:.0f}">'
                     f'{escape(label)}</text>')
        x += w + 14
    return parts, y + LEGEND_ROW


def _frame(chart_id: str, title: str, desc: str, height: float, body: list[str]) -> Markup:
    cid = escape(chart_id)
    return Markup(
        f'<svg class="chart" id="{cid}" role="img" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'aria-label="{escape(title)}" aria-describedby="{cid}-desc" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title>{escape(title)}</title><desc id="{cid}-desc">{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def _axes(labels: Sequence[str], top: int) -> tuple[list[str], float, float]:
    """Grid lines, y ticks and x labels; returns them, the plot height and the slot width."""
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    parts = []
    steps = next(n for n in (5, 4, 2, 1) if top % n == 0 and top >= n)  # whole-number ticks
    for i in range(steps + 1):
        value = top * i // steps
        y = TOP + plot_h - plot_h * i / steps
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/><text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{value}</text>')
    every = max(1, -(-len(labels) // 10))  # at most ~10 day labels under the axis
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + slot * (i + 0.5)
            parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" '
                         f'text-anchor="middle">{escape(label)}</text>')
    return parts, plot_h, slot


def line_chart(chart_id: str, title: str, labels: Sequence[str],
               series: Sequence[tuple[str, Sequence[int]]], unit: str = "") -> Markup:
    """One line per named series over the `labels` (days or hours; e.g. sales per store)."""
    top = nice_max(max((max(values, default=0) for _, values in series), default=0))
    parts, plot_h, slot = _axes(labels, top)
    for i, (name, values) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = [(LEFT + slot * (j + 0.5), TOP + plot_h - plot_h * v / top)
                  for j, v in enumerate(values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{path}"/>')
        for (x, y), label, v in zip(points, labels, values, strict=False):  # may end early
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                         f'<title>{escape(name)}, {escape(label)}: {v}{escape(_unit(unit))}</title>'
                         f'</circle>')
    legend, height = _legend([name for name, _ in series], HEIGHT + 6)
    desc = "; ".join(f"{name}: {sum(values)}{_unit(unit)} in total" for name, values in series)
    return _frame(chart_id, title, desc or "No stores.", height, parts + legend)


def bar_chart(chart_id: str, title: str, labels: Sequence[str], values: Sequence[int],
              unit: str = "") -> Markup:
    """One bar per label (a day or an hour; e.g. coupon redemptions, all shown stores)."""
    top = nice_max(max(values, default=0))
    parts, plot_h, slot = _axes(labels, top)
    bar_w = max(slot * 0.7, 1)
    for j, (label, v) in enumerate(zip(labels, values, strict=False)):  # values may end early
        h = plot_h * v / top
        x = LEFT + slot * j + (slot - bar_w) / 2
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" '
                     f'width="{bar_w:.1f}" height="{h:.1f}">'
                     f'<title>{escape(label)}: {v}{escape(_unit(unit))}</title></rect>')
    shown = f", {labels[0]} to {labels[len(values) - 1]}" if values and labels else ""
    desc = f"{sum(values)}{_unit(unit)} in total{shown}."
    return _frame(chart_id, title, desc, HEIGHT, parts)
