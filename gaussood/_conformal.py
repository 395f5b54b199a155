"""Conformal and CV+ ranking: pure functions on sorted calibration scores.

A conformal p-value of a score s against m calibration scores c_1..c_m is
(1 + #{c_i <= s}) / (m + 1); CV+ (Barber et al. 2021) sums the count over fold
models, each fold model's score ranked among the calibration scores of its own
fold. ``BaseScorer`` keeps the scores and folds; everything here is arithmetic.

Ties. A calibration score c counts as "<= s" when s >= c - TIE_RTOL * scale,
with scale the largest |c| of the calibration set. Under CV+ a training row's
score by a fold model *is* one of that fold's calibration scores, recomputed:
BLAS rounds a one-row product differently from a batch product (measured: up to
2.6e-7 of scale on float32 data here, d = 4..1024, and 7.9e-7 relative on AMD
OpenBLAS, tests/test_dask.py; 7e-16 on float64), so an exact
comparison ranked that row differently alone and in a batch (by 1 / (m + 1)).
The tolerance absorbs that rounding; p-values, ``conformal_offset`` and the CV+
decision all use the same lowered scores (``tie_floors``), so ``predict``
follows the p-value exactly. A fresh score within the tolerance of a
calibration score gets the larger p-value (conservative by at most one rank).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

# "auto" takes CV+ instead of cross-conformal when n_features / n_samples is at least
# this (GaussianScorer). benchmarks/results/calibration_grid.md, alpha = 5%: the
# cross-conformal rate is off wherever d / n >= 0.026 (0.3-3.2% at d/n = 0.34, 2.3% at
# 0.10, 3.8-6.4% at 0.026) and within 4.8-6.0% wherever d / n <= 0.043 with d = 64; CV+
# is within 3.5-6.2% in all of those cells. 0.02 sits below the first failing ratio.
CVPLUS_MIN_FEATURE_RATIO = 0.02

# Relative tie tolerance (of the largest |calibration score|): about 34 float32 ulps,
# 5x the largest batch-vs-batch score difference seen (module docstring).
TIE_RTOL = 4e-6


def duplicate_groups(X: np.ndarray) -> np.ndarray | None:
    """For each row, the index of the first row equal to it in every value; None when
    all rows differ (the usual case, found in one vectorised pass).

    Rows are compared by their bytes: a 64-bit hash of each row first, then an exact
    comparison of the rows whose hashes collide.
    """
    X = np.ascontiguousarray(X)
    n = X.shape[0]
    raw = X.view(np.uint8).reshape(n, -1)
    width = -(-raw.shape[1] // 8) * 8
    if width != raw.shape[1]:
        raw = np.hstack([raw, np.zeros((n, width - raw.shape[1]), np.uint8)])
    words = np.ascontiguousarray(raw).view(np.uint64)
    mult = np.random.default_rng(0).integers(1, 2**63, size=words.shape[1],
                                             dtype=np.uint64) | np.uint64(1)
    hashed = words @ mult  # wraps modulo 2**64, as a hash should
    _, inverse, counts = np.unique(hashed, return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[inverse.ravel()] > 1)
    if candidates.size == 0:
        return None
    rows = np.ascontiguousarray(raw[candidates]).view(f"V{raw.shape[1]}").ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    groups = np.arange(n)
    groups[candidates] = candidates[first[inverse.ravel()]]  # np.unique's first is the earliest
    return None if np.all(groups == np.arange(n)) else groups


# drop_repeats warns when at least this share of the rows repeat an earlier row
REPEATS_WARN_SHARE = 0.01


def repeat_folds(groups: np.ndarray, kfold) -> list:
    """``kfold`` (a shuffled scikit-learn ``KFold``) over the distinct rows, each fold
    holding every copy of its rows: [(fit rows, held-out rows), ...]. ``groups``: from
    ``duplicate_groups``. A row held out while a copy stays in the fit is scored as a
    seen row (k-NN with k = 1: at distance 0)."""
    distinct = np.flatnonzero(groups == np.arange(groups.shape[0]))
    kfold = type(kfold)(min(kfold.n_splits, distinct.shape[0]), shuffle=True,
                        random_state=kfold.random_state)
    folds = []
    for _, test in kfold.split(distinct):
        held = np.isin(groups, distinct[test])
        folds.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return folds


def drop_repeats(scores: np.ndarray, groups: np.ndarray | None, *, stacklevel: int = 2):
    """Out-of-fold ``scores`` with the repeats of each row set to NaN (no calibration
    score), and a warning when they are at least ``REPEATS_WARN_SHARE`` of the rows;
    ``scores`` as is when ``groups`` is None (all rows differ).

    Calibration scores must be exchangeable with a fresh row's score. Every copy
    counted again weighs a row more than a fresh one, and a copy left in a row's fit
    makes its held-out score that of a seen row: with training rows repeated 2-4 times,
    k-NN (k = 1) flagged 100% of fresh rows at alpha 5% and Gaussian cv+ 14.3%. With
    ``repeat_folds`` (k-NN: leave all copies out), each distinct row gives one score
    from a model that never saw it, and the conformal guarantee holds for fresh rows.
    """
    if groups is None:
        return scores
    repeats = groups != np.arange(groups.shape[0])
    if repeats.sum() >= REPEATS_WARN_SHARE * groups.shape[0]:  # a few: handled, not news
        warnings.warn(
            f"X has {int(repeats.sum())} rows that repeat an earlier row exactly "
            f"({groups.shape[0] - int(repeats.sum())} distinct rows): conformal calibration "
            "scores each distinct row once, by a model fitted without any of its copies, "
            "so the false-alarm rate holds for fresh rows. The fit itself keeps every row; "
            "drop the repeats if they are not meant to weigh more.", UserWarning,
            stacklevel=stacklevel + 1)
    scores = np.array(scores, dtype=np.float64)
    scores[repeats] = np.nan
    return scores


def tie_floors(calibration_scores: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Sorted calibration scores lowered by the tie tolerance (still sorted).

    ``#{c_i <= s}`` is ``searchsorted(tie_floors(c), s, "right")``. ``scale``
    defaults to max |c|; CV+ passes the scale of all its calibration scores.
    """
    c = np.asarray(calibration_scores, dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(c))) if c.size else 0.0
    return c - TIE_RTOL * scale


def conformal_counts(floors: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """#{c_i <= s} for each score s, ``floors`` from ``tie_floors``.

    The scores are looked up in sorted order (the same counts, about twice as fast
    for thousands of scores: the binary searches then walk the table in order). The
    order of tied scores does not change their counts, so the sort need not be stable
    (numpy's default sort: 2.8 ms against 7.7 ms for a stable one on 40,000 scores).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.shape[0] < 64:
        return np.searchsorted(floors, scores, side="right")
    order = np.argsort(scores)
    counts = np.empty(scores.shape[0], dtype=np.intp)
    counts[order] = np.searchsorted(floors, scores[order], side="right")
    return counts


def conformal_pvalues(calibration_scores: np.ndarray, scores) -> np.ndarray:
    """Split-conformal p-values (1 + #{c_i <= s}) / (m + 1) of ``scores``."""
    counts = conformal_counts(tie_floors(calibration_scores), scores)
    return (1.0 + counts) / (calibration_scores.shape[0] + 1.0)


def conformal_rank_limit(m: int, alpha: float, *, stacklevel: int = 3,
                         warn: bool = True) -> int:
    """J = floor(alpha (m + 1)): a conformal p-value (1 + c) / (m + 1) is <= alpha
    exactly when 1 + c <= J (warns when J is 0: nothing can be flagged)."""
    limit = math.floor(alpha * (m + 1) + 1e-12)
    if limit < 1 and warn:
        warnings.warn(
            f"{m} calibration samples cannot certify alpha={alpha}: at least "
            f"{math.ceil(1 / alpha - 1)} are needed. Nothing will be flagged.",
            UserWarning, stacklevel=stacklevel + 1)
    return limit


def conformal_offset(calibration_scores: np.ndarray, alpha: float) -> float:
    """Score below which a sample's conformal p-value is <= alpha.

    With m sorted calibration scores c_(1) <= ... <= c_(m), the split-conformal
    p-value of a score s is (1 + #{c <= s}) / (m + 1); it is <= alpha exactly when
    s < f_(J), J = floor(alpha (m + 1)) and f = ``tie_floors(c)``: c lowered by the
    tie tolerance, as the p-value counts it.
    """
    j = conformal_rank_limit(calibration_scores.shape[0], alpha) - 1
    if j < 0:
        return -np.inf
    return float(tie_floors(calibration_scores)[j])


def fold_of_sorted(out_of_fold: np.ndarray, test_rows: list) -> np.ndarray:
    """Fold number of each calibration score, in the order of the sorted scores.

    ``out_of_fold``: the out-of-fold score of each training row (NaN: none);
    ``test_rows``: the rows of each fold.
    """
    fold_of_row = np.full(out_of_fold.shape[0], -1, dtype=np.int64)
    for k, test in enumerate(test_rows):
        fold_of_row[test] = k
    has = ~np.isnan(out_of_fold)
    order = np.argsort(out_of_fold[has], kind="stable")  # as np.sort of the scores
    return fold_of_row[has][order]


def cvplus_floors(calibration_scores: np.ndarray, calibration_fold: np.ndarray,
                  n_folds: int) -> list:
    """Each fold's calibration scores (sorted), lowered by the tie tolerance of all."""
    floors = tie_floors(calibration_scores)
    return [floors[calibration_fold == k] for k in range(n_folds)]


def cvplus_pvalue_decision(counts: np.ndarray, m: int, alpha: float | None):
    """(p-value, decision) from the summed fold counts; decision None without alpha.

    p = (1 + counts) / (m + 1); the decision is negative exactly when p <= alpha,
    as ``conformal_offset``: 1 + counts <= J, J = floor(alpha (m + 1)).
    """
    p = (1.0 + counts) / (m + 1.0)
    if alpha is None:
        return p, None
    limit = conformal_rank_limit(m, alpha, warn=False)  # the fit warned
    return p, ((1.0 + counts) - (limit + 0.5)) / (m + 1.0)
