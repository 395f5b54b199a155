"""The saddlepoint deviate of a Gaussian quadratic form against closed forms."""

import numpy as np
import pytest
from scipy import stats

from gaussood._quadform import deviate_table, normal_deviate


@pytest.mark.parametrize("d", [1, 3, 30, 512])
def test_equal_eigenvalues_give_the_chi_square_law(d):
    """lambda_i = c for all i: Q = c chi2_d, so z(q) = Phi^-1(F_chi2_d(q / c))."""
    c = 2.5
    table = deviate_table(np.full(d, c))
    p = np.linspace(1e-4, 1 - 1e-4, 401)
    q = c * stats.chi2.ppf(p, d)
    z = normal_deviate(q, *table)
    np.testing.assert_allclose(z, stats.norm.ppf(p), atol=0.02 if d > 2 else 0.06)


def test_unequal_eigenvalues_match_monte_carlo():
    rng = np.random.default_rng(0)
    lam = 1.0 / (1.0 + np.arange(64))
    draws = (rng.standard_normal((200_000, 64)) ** 2) @ lam
    z = normal_deviate(draws, *deviate_table(lam))
    for level in (0.01, 0.05, 0.5, 0.95, 0.99):  # z-quantiles of the draws vs N(0, 1)
        assert np.quantile(z, level) == pytest.approx(stats.norm.ppf(level), abs=0.03)


def test_deviate_is_monotone_and_finite_far_out():
    lam = np.array([4.0, 1.0, 0.5])
    table = deviate_table(lam)
    q = np.geomspace(1e-300, 1e300, 2000)
    z = normal_deviate(q, *table)
    assert np.all(np.isfinite(z)) and np.all(np.diff(z) >= 0)


SPECTRA = {
    "one": np.array([3.0]),
    "equal-512": np.full(512, 2.5),
    "decaying-256": 1.0 / (1.0 + np.arange(256)) ** 0.8,
    "heavy-100": np.random.default_rng(1).exponential(size=100) ** 3,
    "tiny-tail-64": np.r_[1.0, np.full(63, 1e-9)],
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_newton_table_equals_the_bisection_table(name):
    """Newton's method replaced bisection: the same table, to round-off."""
    from gaussood._quadform import _solve_saddlepoint, _solve_saddlepoint_bisection

    lam = SPECTRA[name]
    new = deviate_table(lam)
    old = deviate_table(lam, _solver=_solve_saddlepoint_bisection)
    np.testing.assert_array_equal(new[0], old[0])
    np.testing.assert_allclose(new[1], old[1], rtol=1e-9, atol=1e-9)
    assert new[2] == old[2]
    q = np.geomspace(lam.sum() * 1e-12, lam.sum() * 1e4, 4097)
    t_new, t_old = _solve_saddlepoint(lam, q), _solve_saddlepoint_bisection(lam, q)
    assert np.max(np.abs(t_new - t_old) / (np.abs(t_old) + 1.0 / lam.max())) < 1e-12
