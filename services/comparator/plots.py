"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed), each with the data
behind it as JSON so a UI can redraw it interactively: loss curves overlaid, the Pareto front of quality
vs time and vs memory, and (studies) the optimization history."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import PARETO_AXES, ReportData, interval  # noqa: E402

# Beyond this many rows a study's curves are drawn thin and unlabelled.
LEGEND_LIMIT = 12


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    data_json: str


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def loss_curves(report: ReportData) -> Figure | None:
    curves = {k: v for k, v in report.curves.items() if v.get("train") or v.get("valid")}
    if not curves:
        return None
    fig, (train_ax, valid_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    many = len(curves) > LEGEND_LIMIT
    for label, curve in curves.items():
        style = {"linewidth": 0.8, "alpha": 0.6} if many else {"linewidth": 1.6, "label": label}
        if curve.get("train"):
            steps, values = zip(*curve["train"])
            train_ax.plot(steps, values, **style)
        if curve.get("valid"):
            steps, values = zip(*curve["valid"])
            valid_ax.plot(steps, values, marker="o", markersize=3, **style)
    suffix = " (mean over seeds)" if report.kind == "comparison" else ""
    train_ax.set(title=f"training loss{suffix}", xlabel="step", ylabel="loss (nats/token)")
    valid_ax.set(title=f"validation loss{suffix}", xlabel="step", ylabel="loss (nats/token)")
    for ax in (train_ax, valid_ax):
        ax.grid(alpha=0.3)
        if not many:
            ax.legend(fontsize=8)
    return Figure("loss_curves", "Loss curves", _png(fig), json.dumps(curves))


def pareto(report: ReportData) -> Figure | None:
    quality, time_axis, memory_axis = PARETO_AXES
    rows = [r for r in report.rows if all(math.isfinite(r.mean.get(a, math.nan)) for a in PARETO_AXES)]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    data = []
    for ax, axis, scale, unit in (
        (axes[0], time_axis, 1.0, "wall time (s)"),
        (axes[1], memory_axis, 1e-6, "peak memory (MB)"),
    ):
        for row in rows:
            x, y = row.mean[axis] * scale, row.mean[quality]
            ax.scatter(
                [x],
                [y],
                s=60 if row.pareto else 30,
                marker="*" if row.pareto else "o",
                color="tab:red" if row.pareto else "tab:blue",
                zorder=3,
            )
            # Error bars of the 95% intervals, clipped at 0: a time, a size or a loss is never negative.
            x_low, x_high = interval(axis, row.mean[axis], row.ci95.get(axis, 0.0))
            y_low, y_high = interval(quality, y, row.ci95.get(quality, 0.0))
            if x_high > x_low or y_high > y_low:
                ax.errorbar(
                    [x],
                    [y],
                    xerr=[[x - x_low * scale], [x_high * scale - x]],
                    yerr=[[y - y_low], [y_high - y]],
                    fmt="none",
                    ecolor="gray",
                    alpha=0.6,
                )
            if len(rows) <= LEGEND_LIMIT or row.pareto:
                ax.annotate(row.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        # The 2-D front on this pair of axes, as a staircase.
        front, best = [], math.inf
        for row in sorted(rows, key=lambda r: (r.mean[axis], r.mean[quality])):
            if row.mean[quality] < best:
                best = row.mean[quality]
                front.append((row.mean[axis] * scale, row.mean[quality]))
        if len(front) > 1:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="tab:red", alpha=0.4, linewidth=1)
        ax.set(xlabel=unit, ylabel="best validation loss", title=f"quality vs {unit.split(' (')[0]}")
        ax.set_xlim(left=0)  # time and memory start at 0; an axis running below it invites misreading
        ax.grid(alpha=0.3)
    for row in rows:
        data.append(
            {
                "label": row.label,
                "pareto": row.pareto,
                **{a: row.mean[a] for a in PARETO_AXES},
                **{f"{a}_ci95": row.ci95.get(a) for a in PARETO_AXES},
                **{
                    f"{a}_{end}": value
                    for a in PARETO_AXES
                    for end, value in zip(("low", "high"), interval(a, row.mean[a], row.ci95.get(a, 0.0)))
                },
            }
        )
    fig.suptitle(
        "Pareto front (stars: no other row is better on quality, time and memory at once)", fontsize=10
    )
    return Figure("pareto", "Quality vs time and memory", _png(fig), json.dumps(data))


def history(report: ReportData) -> Figure | None:
    if report.kind != "study" or not report.objectives:
        return None
    name, direction = report.objectives[0]["name"], report.objectives[0]["direction"]
    points = []
    for row in report.rows:
        number = int(row.label.split()[-1])
        value = row.mean.get(name, math.nan)
        points.append(
            {"trial": number, "status": row.status, "value": value if math.isfinite(value) else None}
        )
    points.sort(key=lambda p: p["trial"])
    if not any(p["value"] is not None for p in points):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAILED": "tab:red", "RUNNING": "gray"}
    for status, color in colors.items():
        mine = [p for p in points if p["status"] == status and p["value"] is not None]
        if mine:
            ax.scatter(
                [p["trial"] for p in mine], [p["value"] for p in mine], color=color, label=status.lower()
            )
    best, xs, ys = None, [], []
    for p in points:
        if p["status"] == "COMPLETE" and p["value"] is not None:
            better = best is None or (p["value"] > best if direction == "maximize" else p["value"] < best)
            best = p["value"] if better else best
        if best is not None:
            xs.append(p["trial"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
    ax.set(xlabel="trial", ylabel=name, title=f"optimization history ({direction} {name})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure("history", "Optimization history", _png(fig), json.dumps(points))


def figures(report: ReportData) -> list[Figure]:
    return [f for f in (loss_curves(report), pareto(report), history(report)) if f is not None]
