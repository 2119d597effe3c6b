"""The threshold bisection shared by the depth methods."""
import pytest

from prunekit.methods.depth.base import bisect_threshold


def test_bisection_finds_the_largest_threshold_reaching_k():
    count = lambda t: sum(t < c for c in (0.2, 0.4, 0.6, 0.8))   # removes one more below each cut
    t, trail = bisect_threshold(count, 3)
    assert 0.4 - 1e-4 < t < 0.4 and count(t) == 3
    with pytest.raises(Exception, match="fewer than the 5"):
        bisect_threshold(count, 5)
