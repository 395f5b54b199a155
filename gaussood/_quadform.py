"""Law of a Gaussian quadratic form, Q = sum_i lambda_i chi2_1, as a normal deviate.

If x ~ N(mu, Sigma), ||x - mu||^2 = Q with lambda = eig(Sigma). Two-moment
matches (a scaled chi-square) miss its skewness badly for the decaying spectra
of real embeddings, so we use the saddlepoint approximation (Daniels 1954) in
Barndorff-Nielsen's r* form, accurate far into both tails for quadratic forms
(Kuonen, Biometrika 1999):

    K(t) = -1/2 sum log(1 - 2 t lambda_i),   K'(t_hat) = q,
    w = sign(t_hat) sqrt(2 (t_hat q - K(t_hat))),  v = t_hat sqrt(K''(t_hat)),
    z(q) = w + log(v / w) / w  ~  N(0, 1).

z is tabulated once on a log-spaced grid of q and interpolated when scoring; t_hat
on the grid comes from Newton's method (``_solve_saddlepoint``).
"""

from __future__ import annotations

import numpy as np

GRID_POINTS = 4097
GRID_LOW, GRID_HIGH = 1e-12, 1e4  # q from mean * GRID_LOW to mean * GRID_HIGH


def _solve_saddlepoint(lam: np.ndarray, q: np.ndarray) -> np.ndarray:
    """t_hat with K'(t_hat) = q, by Newton's method on h(t) = 1 / K'(t) - 1 / q.

    h is concave and decreasing on (-inf, 1/(2 max lambda)) (1/K' is a harmonic mean
    of functions affine in t) and nearly linear at both ends, so Newton's iterates
    started right of the root decrease monotonically to it, never crossing the pole.
    The start t0 = (1 - lam_max / q) / (2 lam_max) solves lam_max / (1 - 2 t lam_max)
    = q, and K' exceeds that single term, so t0 >= t_hat. 4-9 iterations reach
    round-off (bisection took 54 steps at d = 512; ``_solve_saddlepoint_bisection``,
    kept as the reference the tests compare with).
    """
    lam_max = float(lam.max())
    t = (1.0 - lam_max / q) / (2.0 * lam_max)
    active = np.arange(q.size)
    for _ in range(100):
        ta = t[active]
        lr = lam / (1.0 - 2.0 * ta[:, None] * lam)
        k1 = lr.sum(axis=1)
        k2 = 2.0 * np.einsum("ij,ij->i", lr, lr)
        step = (1.0 / k1 - 1.0 / q[active]) * (k1 * k1 / k2)
        t[active] = ta + step
        # steps are <= 0 until round-off: a non-negative or tiny one means converged
        done = (step >= 0) | (np.abs(step) <= 2e-15 * (np.abs(t[active]) + 1e-3 / lam_max))
        active = active[~done]
        if active.size == 0:
            break
    return t


def _solve_saddlepoint_bisection(lam: np.ndarray, q: np.ndarray) -> np.ndarray:
    """t_hat with K'(t_hat) = q, by bisection (K' increases on (-inf, 1/(2 max lambda)))."""
    hi = np.full(q.shape, 0.5 / lam.max() * (1.0 - 1e-12))
    lo = -(lam.size / (2.0 * q)) * 2.0 - 1.0 / lam.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        grad = (lam / (1.0 - 2.0 * mid[:, None] * lam)).sum(axis=1)
        above = grad > q
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
        if np.all(hi - lo <= 1e-14 * np.maximum(1.0, np.abs(lo))):
            break
    return 0.5 * (lo + hi)


def deviate_table(eigenvalues: np.ndarray, *, _solver=_solve_saddlepoint
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(log q grid, z on the grid, largest eigenvalue) for the law of Q."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = lam[lam > lam.max() * 1e-12]
    mean = lam.sum()
    q = np.geomspace(mean * GRID_LOW, mean * GRID_HIGH, GRID_POINTS)
    t = _solver(lam, q)
    one_minus = 1.0 - 2.0 * t[:, None] * lam
    K = -0.5 * np.log(one_minus).sum(axis=1)
    K2 = (2.0 * lam**2 / one_minus**2).sum(axis=1)
    w = np.sign(t) * np.sqrt(np.maximum(2.0 * (t * q - K), 0.0))
    v = t * np.sqrt(K2)
    keep = np.abs(w) > 1e-2  # r* is 0/0 at the mean; interpolate across it
    with np.errstate(divide="ignore", invalid="ignore"):
        z = w + np.log(v / w) / w
    keep &= np.isfinite(z)
    z = np.maximum.accumulate(np.where(keep, z, -np.inf))  # guard monotonicity
    keep &= np.isfinite(z)
    return np.log(q[keep]), z[keep], float(lam.max())


def normal_deviate(q: np.ndarray, log_grid: np.ndarray, z_grid: np.ndarray,
                   lam_max: float) -> np.ndarray:
    """z(q) by interpolation; beyond the grid, the tails' asymptotic slopes."""
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logq = np.log(q)
    z = np.interp(logq, log_grid, z_grid)
    high = logq > log_grid[-1]
    if np.any(high):  # upper tail: z grows like sqrt(q / lambda_max)
        q_top = np.exp(log_grid[-1])
        z[high] = z_grid[-1] + (np.sqrt(q[high]) - np.sqrt(q_top)) / np.sqrt(lam_max)
    low = logq < log_grid[0]
    if np.any(low):  # lower tail: continue linearly in log q
        slope = (z_grid[1] - z_grid[0]) / (log_grid[1] - log_grid[0])
        z[low] = z_grid[0] + slope * (np.maximum(logq[low], -745.0) - log_grid[0])
    return z
