"""Downsampling of metric histories for charts, keeping what a reader must not miss.

``min_max_indices`` cuts a history (in step order) into buckets of consecutive points and keeps,
of each bucket, the point with the lowest and the one with the highest value, in their original
order; the first and the last point are always kept. A spike, however narrow, is the extreme of
its bucket, so it survives; a flat stretch costs two points per bucket. Drawn as a line, the
result covers exactly the vertical range the full history covers at each bucket's position, which
is what a chart of ~1000 pixels can show of 100,000 points anyway.

NaN values are never picked as extremes (a bucket of NaN only keeps its first point, so the chart
shows a gap there); infinities are extremes like any other value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def min_max_indices(values: Sequence[float], max_points: int) -> list[int]:
    """Indices (ascending) of at most ``max_points`` points of ``values`` to draw: all of them when
    they fit (or ``max_points`` <= 0), else first, last, and each bucket's min and max."""
    n = len(values)
    if max_points <= 0 or n <= max_points:
        return list(range(n))
    if max_points == 1:
        return [n - 1]
    if max_points == 2:
        return [0, n - 1]
    buckets = (max_points - 2) // 2
    inner = n - 2  # points 1 .. n-2 are bucketed; 0 and n-1 are kept as they are
    picked = [0]
    if buckets == 0:  # max_points == 3: first, last, and the most extreme point between them
        picked.append(_most_extreme(values, 1, n - 1))
    else:
        for b in range(buckets):
            start = 1 + (b * inner) // buckets
            end = 1 + ((b + 1) * inner) // buckets
            if start >= end:
                continue
            low, high = _extremes(values, start, end)
            picked.extend(sorted({low, high}))
    picked.append(n - 1)
    return picked


def _extremes(values: Sequence[float], start: int, end: int) -> tuple[int, int]:
    """Indices of the lowest and highest non-NaN value in ``values[start:end]`` (the first index
    twice when all are NaN)."""
    low = high = -1
    low_value = high_value = 0.0
    for i in range(start, end):
        v = values[i]
        if v != v:  # NaN
            continue
        if low < 0:
            low = high = i
            low_value = high_value = v
        elif v < low_value:
            low, low_value = i, v
        elif v > high_value:
            high, high_value = i, v
    if low < 0:
        return start, start
    return low, high


def _most_extreme(values: Sequence[float], start: int, end: int) -> int:
    """The index in ``[start, end)`` farthest from the straight line between the endpoints."""
    first, last = values[0], values[-1]
    best, best_distance = start, -1.0
    span = len(values) - 1
    for i in range(start, end):
        v = values[i]
        if v != v:
            continue
        line = first + (last - first) * i / span if math.isfinite(first) and math.isfinite(last) else 0.0
        distance = abs(v - line) if math.isfinite(v) else math.inf
        if distance > best_distance:
            best, best_distance = i, distance
    return best
