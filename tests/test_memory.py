"""Scoring works in chunks: extra memory is O(chunk x d), not O(n x d).

The 2,000,000 x 512 case is measured in benchmarks/speed.py; here 100,000 x
512 float32 rows (200 MB) must score with under 64 MB of extra allocations
(numpy reports its allocations to tracemalloc). A single float64 copy of X
would be 400 MB.
"""

import tracemalloc

import numpy as np
import pytest

from gaussood import GaussianScorer, NormShellScorer


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((6000, 512), dtype=np.float32),
            rng.standard_normal((100_000, 512), dtype=np.float32))


@pytest.mark.parametrize("make, labels", [(GaussianScorer, False), (GaussianScorer, True),
                                          (NormShellScorer, False)])
def test_scoring_memory_is_bounded(big, make, labels):
    train, X = big
    y = np.arange(train.shape[0]) % 10 if labels else None
    scorer = make().fit(train, y) if labels else make().fit(train)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        scores = scorer.score_samples(X)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert scores.shape == (100_000,) and np.all(np.isfinite(scores))
    assert peak < 64 * 2**20, f"peak extra memory {peak / 2**20:.0f} MB"
