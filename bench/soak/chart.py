"""The soak's chart as SVG, written by hand (no plotting package): RSS, descriptors and
`stats` latency over time, the floods shaded, the daemon's kills and starts marked.

  svg(results) -> str     results as bench/soak/run writes them to results.json
  python3 chart.py results.json > soak.svg
"""
import json
import math
import sys

W, PANEL, GAP, LEFT, RIGHT, TOP = 900, 170, 40, 70, 20, 40


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def panel(y0, title, series, t_end, res, log=False, unit=""):
    """One panel: `series` is [(t, value or None)]; None values are failures."""
    vals = [v for _, v in series if v is not None]
    out = [f'<text x="{LEFT}" y="{y0 - 8}" font-size="13" font-weight="bold">{esc(title)}</text>']
    if not vals:
        return out
    lo = min(vals) if log else 0
    hi = max(vals)
    if log:
        lo = max(lo, 0.01)
        lo, hi = math.log10(lo), math.log10(max(hi, lo * 10 if lo > 0 else 1))
    hi = hi if hi > lo else lo + 1
    x = lambda t: LEFT + (W - LEFT - RIGHT) * t / max(t_end, 1)
    y = lambda v: y0 + PANEL - PANEL * (((math.log10(max(v, 0.01)) if log else v) - lo) / (hi - lo))
    fs, fe = res["flood_window"]
    out.append(f'<rect x="{x(fs):.1f}" y="{y0}" width="{x(fe) - x(fs):.1f}" height="{PANEL}" fill="#fde8e8"/>')
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{W - LEFT - RIGHT}" height="{PANEL}" fill="none" stroke="#888"/>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        label = 10 ** v if log else v
        yy = y0 + PANEL - PANEL * k / 4
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" font-size="10" text-anchor="end">'
                   f'{label:.3g}{unit}</text>')
    for t, e in res["events"]:
        color = "#c00" if e == "kill -9" else "#070"
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y0}" y2="{y0 + PANEL}" stroke="{color}" '
                   f'stroke-dasharray="4 3"/>')
    # One line per daemon life: nothing is drawn across a kill.
    kills = [t for t, e in res["events"] if e == "kill -9"] + [float("inf")]
    lo_t = float("-inf")
    for k in kills:
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series if v is not None and lo_t <= t < k)
        if pts:
            out.append(f'<polyline points="{pts}" fill="none" stroke="#1f4e9c" stroke-width="1.2"/>')
        lo_t = k
    for t, v in series:
        if v is None:
            out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y0 + PANEL - 6}" y2="{y0 + PANEL}" '
                       f'stroke="#c00"/>')
    return out


def svg(res):
    t_end = max([s[0] for s in res["samples"]] + [t for t, _ in res["ctl_series"]] + [1])
    rss = [(t, r / 2**20) for t, r, _, _ in res["samples"]]
    fds = [(t, f) for t, _, f, _ in res["samples"]]
    lat = res["ctl_series"]
    c = res["ctl_stats"]
    h = TOP + 3 * (PANEL + GAP) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{LEFT}" y="20" font-size="14">vswitch soak, {res["minutes"]} min: red dashes kill -9, '
           f'green dashes start, shaded: hostile floods</text>']
    out += panel(TOP + 10, "daemon RSS (MiB)", rss, t_end, res)
    out += panel(TOP + 10 + PANEL + GAP, "daemon open descriptors", fds, t_end, res)
    out += panel(TOP + 10 + 2 * (PANEL + GAP), f"stats over the control socket (ms, log scale): "
                 f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms; red ticks: no answer", lat, t_end, res,
                 log=True)
    yb = TOP + 10 + 3 * (PANEL + GAP) - GAP + 20
    for k in range(6):
        t = t_end * k / 5
        xx = LEFT + (W - LEFT - RIGHT) * k / 5
        out.append(f'<text x="{xx:.1f}" y="{yb}" font-size="10" text-anchor="middle">{t:.0f} s</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(svg(json.load(f)))
