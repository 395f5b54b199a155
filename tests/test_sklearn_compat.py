"""The whole scikit-learn estimator contract, for every scorer and structure."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussood import GaussianScorer, KNNScorer, NormShellScorer, PValueCombination

ESTIMATORS = [
    GaussianScorer(),
    GaussianScorer(covariance="oas", calibration="chi2"),
    GaussianScorer(covariance=0.1, n_clusters=3, random_state=0),
    GaussianScorer(calibration="conformal"),
    GaussianScorer(calibration="cv+", random_state=0),
    NormShellScorer(calibration="cv+", random_state=0),
    NormShellScorer(),
    NormShellScorer(whiten=True),
    KNNScorer(n_neighbors=5),
    KNNScorer(n_neighbors=5, index="ivf", n_lists=4, n_probe=4),
    KNNScorer(n_neighbors=5, normalize=False),
    PValueCombination(random_state=0),
    PValueCombination([GaussianScorer(calibration="chi2"), KNNScorer(n_neighbors=3)],
                      method="min", calibration_folds=3),
]


def _expected_failures(estimator):
    """Two documented departures of CV+ (docs/calibration.md):

    - with the alpha rule, decision_function follows the CV+ p-value (negative exactly
      when predict flags); it is not score_samples - offset_ (offset_ is NaN);
    - a training row scored by its own fold model ties with its own calibration score,
      and rounding (which differs with the number of rows scored at once) decides
      whether the tie counts: its p-value may move by 1 / (m + 1). The subset check
      scores the training rows; "auto" picks cv+ on its 20 x 3 data (d / n >= 0.02)
      for GaussianScorer (class-conditional there: the check passes labels).
    """
    params = estimator.get_params()
    failures = {}
    if params.get("calibration") == "cv+":
        failures["check_outliers_train"] = ("cv+: decision_function is not "
                                            "score_samples - offset_")
    gaussian_auto = isinstance(estimator, GaussianScorer) and params["calibration"] in (
        "auto", "cv+")
    if gaussian_auto or (isinstance(estimator, PValueCombination) and params["scorers"] is None):
        failures["check_methods_subset_invariance"] = ("cv+: a training row's tie with its "
                                                       "own calibration score is rounding")
    return failures


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_contract(estimator, check):
    check(estimator)
