"""The whole scikit-learn estimator contract, for every scorer and structure."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussood import GaussianScorer, KNNScorer, NormShellScorer, PValueCombination
from gaussood._registry import registered_scorers

# Constructor arguments for the checks' small data sets (as scikit-learn's own
# PER_ESTIMATOR_CHECK_PARAMS): k = 50 neighbours need more rows than a check has.
CHECK_PARAMS = {KNNScorer: {"n_neighbors": 5}}


def shipped_scorers() -> list:
    """Every registered scorer class that gaussood ships (not those defined in tests)."""
    return [cls for cls in registered_scorers().values()
            if cls.__module__.split(".")[0] == "gaussood"]


# each shipped scorer as constructed by default (from the registry, so a new scorer is
# checked without a line here), then the structures worth checking apart
ESTIMATORS = [cls(**CHECK_PARAMS.get(cls, {})) for cls in shipped_scorers()] + [
    GaussianScorer(covariance="oas", calibration="chi2"),
    GaussianScorer(covariance=0.1, n_clusters=3, random_state=0),
    GaussianScorer(calibration="conformal"),
    GaussianScorer(calibration="cv+", random_state=0),
    NormShellScorer(calibration="cv+", random_state=0),
    NormShellScorer(whiten=True),
    KNNScorer(n_neighbors=5, index="ivf", n_lists=4, n_probe=4),
    KNNScorer(n_neighbors=5, normalize=False),
    PValueCombination(random_state=0),
    PValueCombination([GaussianScorer(calibration="chi2"), KNNScorer(n_neighbors=3)],
                      method="min", calibration_folds=3),
]


def _expected_failures(estimator):
    """One documented departure of CV+ (docs/calibration.md): with the alpha rule,
    decision_function follows the CV+ p-value (negative exactly when predict flags);
    it is not score_samples - offset_ (offset_ is NaN).

    (check_methods_subset_invariance passes: a training row's tie with its own
    calibration score no longer depends on how many rows are scored at once;
    ``gaussood._conformal.TIE_RTOL``.)
    """
    if estimator.get_params().get("calibration") == "cv+":
        return {"check_outliers_train": "cv+: decision_function is not score_samples - offset_"}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_contract(estimator, check):
    check(estimator)
