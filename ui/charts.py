"""The UI's charts (Altair, drawn by Streamlit): curves of a run, overlays and bars of a comparison, the
Pareto view, a study's best-so-far and parallel coordinates. Each takes plain rows and returns a chart."""

from __future__ import annotations

import numbers

import altair as alt
import pandas as pd

from ui import formatting

HEIGHT = 260
BAR_HEIGHT = 220


def curve(rows: list[dict], y: str, title: str, color: str = "series", log_y: bool = False) -> alt.Chart:
    frame = pd.DataFrame(rows)
    scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    lines = alt.Chart(frame).mark_line(point=len(frame) < 60)
    return lines.encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y(f"{y}:Q", title=title, scale=scale),
        color=alt.Color(f"{color}:N", title=None),
        tooltip=[alt.Tooltip(f"{color}:N"), "step:Q", alt.Tooltip(f"{y}:Q", format=".4g")],
    ).properties(height=HEIGHT, title=title)


def bars(rows: list[dict], title: str) -> alt.Chart:
    """Mean per label with its 95% interval as an error bar (vertical bars: narrow columns keep them legible)."""
    frame = pd.DataFrame(rows)
    base = alt.Chart(frame).encode(x=alt.X("label:N", title=None, sort=None, axis=alt.Axis(labelAngle=-30)))
    bar = base.mark_bar().encode(
        y=alt.Y("mean:Q", title=None),  # the chart title names it
        color=alt.Color("label:N", legend=None),
        tooltip=["label:N", alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("low:Q", format=".4g"),
                 alt.Tooltip("high:Q", format=".4g")],
    )  # fmt: skip
    error = base.mark_errorbar(ticks=True).encode(y=alt.Y("low:Q", title=None), y2="high:Q")
    return (bar + error).properties(height=BAR_HEIGHT, title=title)


def pareto(rows: list[dict]) -> alt.Chart:
    """Quality (lower valid loss is better) against time, point size by peak memory."""
    frame = pd.DataFrame(rows)
    points = alt.Chart(frame).mark_circle(opacity=0.85).encode(
        # Time starts at 0 (never below it); axis labels rounded, not "216.480816".
        x=alt.X("wall_seconds:Q", title="time (s)", scale=alt.Scale(zero=True), axis=alt.Axis(format=",.0f")),
        y=alt.Y("best_valid_loss:Q", title="best valid loss", scale=alt.Scale(zero=False),
                axis=alt.Axis(format=".3~g")),
        size=alt.Size("peak_memory_gb:Q", title="peak memory (GB)"),
        color=alt.Color("front:N", title=None, scale=alt.Scale(domain=["Pareto front", "dominated"],
                                                               range=["#e4572e", "#9aa5b1"])),
        tooltip=["label:N", alt.Tooltip("best_valid_loss:Q", format=".4g"),
                 alt.Tooltip("wall_seconds:Q", format=".4g"), alt.Tooltip("peak_memory_gb:Q", format=".3g")],
    )  # fmt: skip
    labels = (
        alt.Chart(frame)
        .mark_text(align="left", dx=8, dy=-6)
        .encode(x="wall_seconds:Q", y="best_valid_loss:Q", text="label:N")
    )
    return (points + labels).properties(height=320, title="Quality vs time vs memory")


def best_so_far(rows: list[dict], objective: str) -> alt.Chart:
    frame = pd.DataFrame(rows)
    points = (
        alt.Chart(frame)
        .mark_circle(color="#9aa5b1")
        .encode(
            x=alt.X("trial:Q", title="trial", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title=objective, scale=alt.Scale(zero=False)),
        )
    )
    line = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", color="#e4572e")
        .encode(
            x="trial:Q", y="best so far:Q", tooltip=["trial:Q", alt.Tooltip("best so far:Q", format=".4g")]
        )
    )
    return (points + line).properties(height=HEIGHT, title=f"Best {objective} so far")


def parallel_coordinates(rows: list[dict], dimensions: list[str], color: str) -> alt.Chart:
    """One line per trial across its parameters and objective, each axis scaled to [0, 1] and labelled with
    its own values (lowest and highest, or each category); a trial without a value (running, failed) shows
    "-" there and leaves a gap."""
    frame = pd.DataFrame(rows)
    long = []
    for _, row in frame.iterrows():
        for dim in dimensions:
            value = row.get(dim)
            long.append({"trial": row["trial"], "status": row["status"], "axis": dim, "raw": value,
                         "color": row.get(color)})  # fmt: skip
    data = pd.DataFrame(long)
    data["position"] = float("nan")  # a trial without a value on an axis (e.g. failed) leaves a gap
    ticks = []
    for dim in dimensions:
        mask = data["axis"] == dim
        raw = data.loc[mask, "raw"]
        present = raw.notna()
        numeric = pd.to_numeric(raw, errors="coerce")
        if present.any() and (numeric.notna() == present).all():
            low, high = numeric.min(), numeric.max()
            data.loc[mask, "position"] = 0.5 if high == low else (numeric - low) / (high - low)
            ends = [(0.5, low)] if high == low else [(0.0, low), (1.0, high)]
            ticks += [{"axis": dim, "position": p, "label": _tick(v)} for p, v in ends]
        elif present.any():  # categorical: spread the categories evenly
            cats = sorted(raw[present].astype(str).unique())
            spots = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            data.loc[mask & data["raw"].notna(), "position"] = raw[present].astype(str).map(spots)
            ticks += [{"axis": dim, "position": p, "label": c} for c, p in spots.items()]
    data["value"] = [_tick(v) for v in data["raw"]]
    data = data.drop(columns=["raw"])
    x = alt.X("axis:N", sort=dimensions, title=None)
    lines = (
        alt.Chart(data)
        .mark_line(point=True, opacity=0.7)
        .encode(
            x=x,
            y=alt.Y("position:Q", axis=None),
            detail="trial:N",
            color=alt.Color("color:Q", title=color, scale=alt.Scale(scheme="viridis")),
            tooltip=["trial:N", "status:N", "axis:N", alt.Tooltip("value:N", title="value")],
        )
    )
    labels = (
        alt.Chart(pd.DataFrame(ticks, columns=["axis", "position", "label"]))
        .mark_text(align="left", dx=6, fontSize=11, color="gray")
        .encode(x=x, y=alt.Y("position:Q", axis=None), text="label:N")
    )
    return alt.layer(lines, labels).properties(height=300, title="Trials across parameters")


def _tick(value) -> str:
    """An axis or tooltip value as people write it: 0.003, 16, 1.52; "-" when missing."""
    if value is None or (isinstance(value, numbers.Real) and pd.isna(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    return formatting.number(float(value), 3) if not float(value).is_integer() else f"{int(value):,}"
