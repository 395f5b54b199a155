"""The BLAS thread limits around fits (gaussood._threads)."""

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from gaussood import GaussianScorer
from gaussood._threads import fit_threads


def _max_threads():
    return max((pool["num_threads"] for pool in threadpool_info()), default=1)


def test_small_fits_run_on_one_thread_large_ones_keep_the_pool():
    with threadpool_limits(limits=2):
        with fit_threads(40_000, 256):          # 2.6e9 <= 1e10: one thread
            assert _max_threads() == 1
        with fit_threads(1_000_000, 256):       # 6.6e10: the process's setting
            assert _max_threads() == 2


def test_fit_inside_the_limit_gives_the_same_model():
    X = np.random.default_rng(0).normal(size=(2_000, 16))
    with threadpool_limits(limits=2):
        a = GaussianScorer(random_state=0).fit(X)
    with threadpool_limits(limits=1):
        b = GaussianScorer(random_state=0).fit(X)
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=1e-10)
