"""The few statistics the benchmark reports: percentiles, medians and paired ratios."""

import math
import statistics


def percentile(values, p):
    """The p-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values):
    """The median of the values that are numbers; NaN when there are none."""
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def paired_ratio(ours, theirs):
    """The median of per-round ratios ours/theirs: noise common to a round cancels out."""
    return median([a / b if b else math.nan for a, b in zip(ours, theirs, strict=True)])
