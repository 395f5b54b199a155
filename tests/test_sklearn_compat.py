"""The whole scikit-learn estimator contract, for every scorer and structure."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussood import GaussianScorer, KNNScorer, NormShellScorer, PValueCombination

ESTIMATORS = [
    GaussianScorer(),
    GaussianScorer(covariance="oas", calibration="chi2"),
    GaussianScorer(covariance=0.1, n_clusters=3, random_state=0),
    GaussianScorer(calibration="conformal"),
    NormShellScorer(),
    NormShellScorer(whiten=True),
    KNNScorer(n_neighbors=5),
    KNNScorer(n_neighbors=5, index="ivf", n_lists=4, n_probe=4),
    KNNScorer(n_neighbors=5, normalize=False),
    PValueCombination(random_state=0),
    PValueCombination([GaussianScorer(calibration="chi2"), KNNScorer(n_neighbors=3)],
                      method="min", calibration_folds=3),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_contract(estimator, check):
    check(estimator)
