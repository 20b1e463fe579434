"""Pareto fronts and hypervolume for minimization problems (maximized objectives are negated by the caller)."""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """a is no worse than b everywhere and strictly better somewhere."""
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_front(Y: np.ndarray) -> list[int]:
    """Indices (ascending) of the rows of Y (points x objectives, lower is better) that no other row dominates.

    Duplicated points are all kept: neither dominates the other.
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[0] == 0:
        return []
    no_worse = np.all(Y[:, None, :] <= Y[None, :, :], axis=-1)  # [i, j]: i is no worse than j
    better = np.any(Y[:, None, :] < Y[None, :, :], axis=-1)
    dominated = np.any(no_worse & better, axis=0)
    return [int(i) for i in np.flatnonzero(~dominated)]


def hypervolume_2d(Y: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by the points of Y (two objectives, lower is better) and bounded by `reference`."""
    Y = np.asarray(Y, dtype=float)
    Y = Y[np.all(Y < reference, axis=1)]
    if Y.shape[0] == 0:
        return 0.0
    front = Y[pareto_front(Y)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    area, last_y = 0.0, float(reference[1])
    for x, y in front:
        if y < last_y:
            area += (float(reference[0]) - x) * (last_y - y)
            last_y = y
    return area
