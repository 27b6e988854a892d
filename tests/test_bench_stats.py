"""The benchmark's statistics helper, checked on hand-worked values (no timing here)."""

import math

import pytest

from bench.stats import median, paired_ratio, percentile


@pytest.mark.parametrize("p, expected", [(0, 1), (50, 3), (100, 5), (25, 2), (99, 4.96)])
def test_percentile_interpolates_between_ranks(p, expected):
    assert percentile([5, 1, 4, 2, 3], p) == pytest.approx(expected)


def test_percentile_of_one_value_is_that_value():
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_median_skips_nan():
    assert median([1.0, math.nan, 3.0]) == 2.0


def test_paired_ratio_is_the_median_of_round_ratios():
    assert paired_ratio([90, 200, 50], [100, 100, 100]) == pytest.approx(0.9)
