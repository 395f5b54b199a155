"""The feature space a scorer works in: raw, L2-normalised, or centred then L2.

InfoNCE compares embeddings by cosine similarity, so training sees only their
directions; SSD (Sehwag et al. 2021) and Mahalanobis++ (Mueller & Hein 2025)
normalise features before the Mahalanobis distance. ``normalize`` of every
scorer picks the space:

    None         the features as given
    "l2"         x / ||x||                     (zero rows stay zero)
    "center-l2"  (x - m) / ||x - m||, m the mean of the fit rows (SSD)

The transform is exact: a scorer with ``normalize="l2"`` gives the scores of the
same scorer fitted on ``x / ||x||`` computed as above (``l2_rows``).
"""

from __future__ import annotations

import numpy as np

SPACES = ("l2", "center-l2")
# fitted attribute of "center-l2": the mean subtracted before normalising
CENTER = "normalize_mean_"


def space_of(normalize) -> str | None:
    """``True`` (KNNScorer's old boolean) means "l2"; ``False`` means None."""
    if normalize is True:
        return "l2"
    if normalize is False:
        return None
    return normalize


# a scoring cache with this key set gets raw rows and applies normalize="l2" itself
FUSED_L2 = "fused_l2"


def inverse_norms(X: np.ndarray) -> np.ndarray:
    """1 / |x| of each row in X's dtype (0 for a zero row, which then stays zero)."""
    sq = np.einsum("ij,ij->i", X, X)
    inv = np.zeros_like(sq)
    np.divide(1.0, np.sqrt(sq), out=inv, where=sq > 0)
    return inv


def l2_rows(X: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm, in X's dtype (zero rows stay zero).

    The norms come from ``einsum`` (4x faster than ``np.linalg.norm`` here); they
    agree with it to rounding.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    return X / np.where(norms > 0, norms, 1).astype(X.dtype, copy=False)


def fit_space(X: np.ndarray, normalize) -> dict:
    """Fitted state of the space for fit rows ``X`` (the mean for "center-l2")."""
    if space_of(normalize) == "center-l2":
        return {CENTER: X.mean(axis=0, dtype=np.float64)}
    return {}


def to_space(X: np.ndarray, normalize, mean=None, *, l2: bool = True) -> np.ndarray:
    """``X`` in the space (``l2=False``: centre only, for scorers that normalise
    themselves, as KNNScorer does in float32)."""
    space = space_of(normalize)
    if space is None:
        return X
    if space == "center-l2":
        X = (X - mean).astype(X.dtype, copy=False)
    return l2_rows(X) if l2 else X
