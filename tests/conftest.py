import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def anisotropic_gaussian(rng, n, d, *, mean_scale=3.0, seed_cov=0):
    """n samples of N(mu, Sigma) with a decaying spectrum in a random rotation."""
    cov_rng = np.random.default_rng(seed_cov)
    q, _ = np.linalg.qr(cov_rng.normal(size=(d, d)))
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))
    mu = mean_scale * cov_rng.normal(size=d)
    return mu + (rng.normal(size=(n, d)) * scales) @ q.T
