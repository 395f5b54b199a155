"""NormShellScorer: the shell's radius and spread, streaming, and its warnings."""

import numpy as np
import pytest

from gaussood import NormShellScorer
from conftest import anisotropic_gaussian


def test_radius_and_spread_closed_form(rng):
    """Isotropic N(0, s^2 I_d): E||x||^2 = d s^2, Var||x||^2 = 2 d s^4, CV ~ 1/sqrt(2d)."""
    d, s = 256, 3.0
    shell = NormShellScorer().fit(s * rng.normal(size=(20000, d)))
    assert shell.radius_ == pytest.approx(np.sqrt(d) * s, rel=0.01)
    assert shell.norm_cv_ == pytest.approx(1 / np.sqrt(2 * d), rel=0.03)
    np.testing.assert_allclose(shell.law_eigenvalues_.mean(), s**2, rtol=0.01)


def test_inside_and_outside_the_shell_are_flagged(rng):
    X = rng.normal(size=(5000, 64))
    shell = NormShellScorer(alpha=0.01).fit(X)
    direction = rng.normal(size=(1, 64))
    direction /= np.linalg.norm(direction)
    assert shell.predict(shell.location_ + 0.5 * shell.radius_ * direction)[0] == -1
    assert shell.predict(shell.location_ + 1.5 * shell.radius_ * direction)[0] == -1
    assert shell.predict(shell.location_ + shell.radius_ * direction)[0] == 1


def test_partial_fit_equals_batch_fit(rng):
    X = anisotropic_gaussian(rng, 4000, 24) + 50.0
    batch = NormShellScorer().fit(X)
    stream = NormShellScorer()
    for part in np.array_split(X, [3, 900, 2500]):
        stream.partial_fit(part)
    for attr in ("location_", "law_eigenvalues_", "law_z_grid_"):
        np.testing.assert_allclose(getattr(stream, attr), getattr(batch, attr), rtol=1e-10,
                                   atol=1e-10)
    for attr in ("radius_", "spread_", "norm_cv_"):
        assert getattr(stream, attr) == pytest.approx(getattr(batch, attr), rel=1e-10)
    Xt = anisotropic_gaussian(rng, 300, 24) + 50.0
    np.testing.assert_allclose(stream.score_samples(Xt), batch.score_samples(Xt), rtol=1e-9)


def test_l2_normalised_input_is_detected(rng):
    X = rng.normal(size=(500, 32))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    with pytest.warns(UserWarning, match="L2-normalised"):
        NormShellScorer().fit(X)


def test_whitened_shell_ignores_the_covariance_scale(rng):
    X = anisotropic_gaussian(rng, 4000, 32)
    plain = NormShellScorer(whiten=True).fit(X)
    scaled = NormShellScorer(whiten=True).fit(X * 1000.0)
    Xt = anisotropic_gaussian(rng, 100, 32)
    np.testing.assert_allclose(plain.score_samples(Xt), scaled.score_samples(Xt * 1000.0),
                               rtol=1e-6, atol=1e-9)
    assert not hasattr(plain, "partial_fit")


def test_equal_norms_cannot_make_a_shell():
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="no spread"):
        NormShellScorer().fit(X)
