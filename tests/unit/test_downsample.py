"""Downsampling of metric histories for charts (keel_server.tracking.downsample): spikes and
endpoints survive, the bound holds, small inputs pass through, NaN never counts as an extreme."""

from __future__ import annotations

import math
import random

import pytest

from keel_server.tracking.downsample import min_max_indices


def test_short_histories_pass_through_whole() -> None:
    assert min_max_indices([], 10) == []
    assert min_max_indices([1.0], 10) == [0]
    assert min_max_indices([1.0, 2.0, 3.0], 3) == [0, 1, 2]
    assert min_max_indices([float(i) for i in range(50)], 0) == list(range(50))  # 0 means all


@pytest.mark.parametrize("max_points", [1, 2, 3, 4, 5, 10, 11, 100, 999, 1000])
@pytest.mark.parametrize("n", [5, 101, 1000, 12_345])
def test_bound_order_and_endpoints(n: int, max_points: int) -> None:
    rng = random.Random(n * 7 + max_points)
    values = [rng.gauss(0, 1) for _ in range(n)]
    picked = min_max_indices(values, max_points)
    assert len(picked) <= max(max_points, 0) or n <= max_points
    assert picked == sorted(set(picked)), "indices must be ascending and distinct"
    assert all(0 <= i < n for i in picked)
    if n > max_points and max_points >= 2:
        assert picked[0] == 0 and picked[-1] == n - 1
    if max_points == 1 and n > 1:
        assert picked == [n - 1]  # the latest value


def test_even_max_points_fills_the_budget() -> None:
    # The tracking test of GetMetricHistoryBulk asks for exactly 10 of 100 linear points.
    assert len(min_max_indices([float(i) for i in range(100)], 10)) == 10


def test_single_spikes_survive_anywhere() -> None:
    n = 100_000
    for where in (1, 17, 50_000, 77_777, n - 2):
        values = [math.sin(i / 500) for i in range(n)]
        values[where] = 1e6
        picked = min_max_indices(values, 1000)
        assert where in picked, where
        values[where] = -1e6
        assert where in min_max_indices(values, 1000), where


def test_up_and_down_spikes_in_one_bucket_both_survive() -> None:
    values = [0.0] * 10_000
    values[5000], values[5001] = 50.0, -50.0
    picked = min_max_indices(values, 100)
    assert 5000 in picked and 5001 in picked


def test_global_extremes_are_always_kept() -> None:
    rng = random.Random(3)
    for _ in range(20):
        values = [rng.random() for _ in range(rng.randint(200, 5000))]
        picked = min_max_indices(values, rng.randint(4, 150))  # 3: one point between the ends
        kept = [values[i] for i in picked]
        assert max(kept) == max(values) and min(kept) == min(values)


def test_nan_is_never_an_extreme_and_all_nan_buckets_leave_a_gap() -> None:
    values = [float("nan")] * 1000 + [float(i) for i in range(1000)]
    picked = min_max_indices(values, 20)
    chosen = [values[i] for i in picked[1:-1]]
    assert any(math.isnan(v) for v in chosen), "an all-NaN stretch keeps one point (a gap in the chart)"
    finite = [v for v in chosen if not math.isnan(v)]
    assert 999.0 in [values[i] for i in picked]  # the last point
    assert finite == sorted(finite)


def test_infinities_are_extremes() -> None:
    values = [0.0] * 5000
    values[1234] = math.inf
    values[4321] = -math.inf
    picked = min_max_indices(values, 50)
    assert 1234 in picked and 4321 in picked


def test_three_points_keep_the_most_extreme_between_the_ends() -> None:
    values = [0.0] * 100
    values[60] = 9.0
    assert min_max_indices(values, 3) == [0, 60, 99]


def test_a_100k_history_is_cut_fast() -> None:
    import time

    values = [math.sin(i / 100) for i in range(100_000)]
    started = time.perf_counter()
    picked = min_max_indices(values, 1000)
    elapsed = time.perf_counter() - started
    assert len(picked) <= 1000
    assert elapsed < 0.5, f"{elapsed:.3f} s for 100,000 points"
