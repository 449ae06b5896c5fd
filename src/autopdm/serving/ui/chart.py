"""A small risk-history chart as inline SVG, drawn on the server (no script, no chart library).

Colours and line styles come from the page's style sheet (classes `chart-*`), so the chart follows
the page's contrast; the numbers it shows are in its accessible label as well.
"""

from __future__ import annotations

from datetime import date

from markupsafe import Markup, escape

W, H = 600, 150
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 12, 26


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if x >= 0.01 or x == 0 else f"{100 * x:.1f} %"


NICE_TOPS = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def _top(values: list[float], threshold: float, high_cut: float) -> float:
    """The y-axis top: the data and the alert line in view (the high line too when near), a round figure."""
    peak = max([*values, threshold * 1.25])
    if high_cut <= peak * 1.5:
        peak = max(peak, high_cut)
    return next((t for t in NICE_TOPS if t >= peak * 1.1), 1.0)


def risk_chart(history: list[tuple[date, float]], threshold: float, high_cut: float, what: str) -> Markup:
    """The risk of `what` over the days in `history` (feature day, risk), with the alert line."""
    if not history:
        return Markup('<p class="muted">No risk history in memory for this car.</p>')
    days = [d for d, _ in history]
    risks = [r for _, r in history]
    top = _top(risks, threshold, high_cut)
    d0, span = days[0].toordinal(), max(1, days[-1].toordinal() - days[0].toordinal())
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(d: date) -> float:
        return LEFT + pw * (d.toordinal() - d0) / span

    def y(r: float) -> float:
        return TOP + ph * (1 - min(r, top) / top)

    label = (f"Risk that the {what} need service within 15 days, {days[0].isoformat()} to {days[-1].isoformat()}: "
             f"now {_pct(risks[-1])}, highest {_pct(max(risks))}; alert line {_pct(threshold)}.")
    pts = " ".join(f"{x(d):.1f},{y(r):.1f}" for d, r in history)
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(label)}</title>",
             f'<line class="chart-axis" x1="{LEFT}" y1="{TOP + ph}" x2="{W - RIGHT}" y2="{TOP + ph}"/>',
             f'<line class="chart-axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>']
    for level, cls, name in ((threshold, "chart-alert", "alert"), (high_cut, "chart-high", "high")):
        if 0 < level <= top:
            parts.append(f'<line class="{cls}" x1="{LEFT}" y1="{y(level):.1f}" x2="{W - RIGHT}" y2="{y(level):.1f}"/>')
            parts.append(f'<text class="chart-note" x="{W - RIGHT - 4}" y="{y(level) - 4:.1f}" text-anchor="end">'
                         f"{name} {_pct(level)}</text>")
    parts += [f'<polyline class="chart-risk" points="{pts}"/>',
              f'<circle class="chart-now" cx="{x(days[-1]):.1f}" cy="{y(risks[-1]):.1f}" r="5"/>',
              f'<text class="chart-tick" x="{LEFT - 6}" y="{TOP + 5}" text-anchor="end">{_pct(top)}</text>',
              f'<text class="chart-tick" x="{LEFT - 6}" y="{TOP + ph}" text-anchor="end">0 %</text>',
              f'<text class="chart-tick" x="{LEFT}" y="{H - 6}">{days[0].isoformat()}</text>',
              f'<text class="chart-tick" x="{W - RIGHT}" y="{H - 6}" text-anchor="end">{days[-1].isoformat()}</text>',
              "</svg>"]
    return Markup("".join(parts))
