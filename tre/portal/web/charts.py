"""The geometry of the indicators' delay chart, drawn as inline SVG by the template.

Server-side, so the public page needs no script and no chart library: per quarter one
bar per access delay (its median), with a tick at its 90th percentile.
"""

from __future__ import annotations

from typing import Any

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 40
BAR_GAP = 4


def nice_ceiling(value: float) -> float:
    """The top of the axis: 1, 2 or 5 times a power of ten, at or above `value`."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value:
        step /= 10
    return next(m * step for m in (1, 2, 5, 10) if m * step >= value)


def delay_chart(quarters: list[dict[str, Any]], delays: tuple[str, ...]) -> dict[str, Any]:
    """Bars (median) and ticks (90th percentile) in SVG coordinates, the axis ticks and
    the quarter labels; `series` is the delay's index, for its colour and legend."""
    highest = max((q[d]["p90"] or 0 for q in quarters for d in delays), default=0)
    top = nice_ceiling(highest)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(days: float) -> float:
        return round(TOP + plot_h * (1 - days / top), 1)

    slot = plot_w / max(len(quarters), 1)
    bar_w = max((slot - 3 * BAR_GAP) / len(delays) - BAR_GAP, 2)
    bars, labels = [], []
    for i, q in enumerate(quarters):
        x0 = LEFT + i * slot + 2 * BAR_GAP
        labels.append({"x": round(LEFT + (i + 0.5) * slot, 1), "text": q["quarter"]})
        for series, delay in enumerate(delays):
            figures = q[delay]
            if figures["median"] is None:
                continue
            x = round(x0 + series * (bar_w + BAR_GAP), 1)
            bars.append({"series": series, "x": x, "w": round(bar_w, 1),
                         "y": y(figures["median"]),
                         "h": round(y(0) - y(figures["median"]), 1),
                         "p90_y": y(figures["p90"]), "median": figures["median"],
                         "p90": figures["p90"], "quarter": q["quarter"], "delay": delay})
    ticks = [{"y": y(top * k / 4), "text": f"{top * k / 4:g}"} for k in range(5)]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
            "base": y(0), "bars": bars, "ticks": ticks, "labels": labels,
            "label_y": HEIGHT - BOTTOM + 18}
