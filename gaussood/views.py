"""One detector over several views of the same embeddings: the Gaussian scorer in
several feature spaces, combined through its p-values.

No single space wins everywhere (``docs/index.md``, "Which scorer", has the table
measured by ``make bench``): on the shipped CIFAR-10 encoder L2-normalised features see
Fashion-MNIST best (99.0 AUROC against 94.4 raw), relative Mahalanobis on L2 features
sees the held-out CIFAR-10 classes best (67.2 against 55.2), and raw features see
grayscale CIFAR-10 against a Fashion-MNIST encoder best (98.8 against 90.3 for L2).
Fisher's combination of the three views' p-values loses little anywhere (98.9, 65.3,
97.8), which is why
``gaussian_views()`` with its default views is the default detector of
``OODFilter``.
"""

from __future__ import annotations

from .combine import PValueCombination
from .gaussian import GaussianScorer

# view name -> GaussianScorer parameters
VIEWS = {
    "raw": {},
    "l2": {"normalize": "l2"},
    "center-l2": {"normalize": "center-l2"},
    "relative": {"relative": True},
    "relative-l2": {"relative": True, "normalize": "l2"},
    "relative-center-l2": {"relative": True, "normalize": "center-l2"},
}
DEFAULT_VIEWS = ("raw", "l2", "relative-l2")


def gaussian_views(views=DEFAULT_VIEWS, *, method: str = "fisher", n_clusters: int | None = 10,
                   alpha=None, contamination=None, random_state=None,
                   **params) -> PValueCombination:
    """A ``PValueCombination`` of ``GaussianScorer``s, one per view (unfitted).

    Parameters
    ----------
    views : sequence of str, default=("raw", "l2", "relative-l2")
        Names from ``VIEWS``: the feature space (``normalize``) and whether the
        score is relative Mahalanobis (Ren et al. 2021).
    method : {"fisher", "min"}, default="fisher"
        How the views' p-values combine (``PValueCombination``).
    n_clusters : int or None, default=10
        k-means clusters for the relative views when ``fit`` gets no labels
        (SSD's clusters); labels, when given, win (silently: the combination
        passes them on). None: relative views need labels.
    alpha, contamination, random_state
        Of the combination (its conformal threshold; one seed for the views).
    **params
        Further ``GaussianScorer`` parameters for every view (``covariance``,
        ``calibration_folds``, ``chunk_size``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood.views import gaussian_views
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(3000, 8)) + 3.0, rng.integers(0, 3, 3000)
    >>> detector = gaussian_views(random_state=0).fit(X, y)
    >>> len(detector.scorers_), detector.predict(np.full((1, 8), -3.0))
    (3, array([-1]))
    """
    views = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown:
        raise ValueError(f"views must be a non-empty list of {sorted(VIEWS)}; got {views!r}.")
    if len(set(views)) != len(views):
        raise ValueError(f"views are listed twice: {views!r}.")
    components = []
    for view in views:
        spec = {**params, **VIEWS[view]}
        if spec.get("relative"):
            spec["n_clusters"] = n_clusters
        components.append(GaussianScorer(**spec))
    return PValueCombination(components, method=method, alpha=alpha,
                             contamination=contamination, random_state=random_state)
