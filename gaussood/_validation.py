"""Input checks shared by the scorers: clear messages, no silent copies."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import validate_data

FLOAT_DTYPES = (np.float64, np.float32)


def check_features(estimator, X, *, reset: bool, ensure_min_samples: int = 1,
                   ensure_all_finite: bool = True) -> np.ndarray:
    """Validate a 2-D feature matrix through scikit-learn's ``validate_data``.

    float32 and float64 input is kept as it is (no copy when already C-ordered);
    anything else numeric is converted to float64. Non-numeric input raises a
    ``TypeError`` or ``ValueError`` that says so.
    """
    if isinstance(X, np.ndarray) and X.dtype.kind in "USMmV":
        raise TypeError(f"X must hold real numbers; got an array of dtype {X.dtype}.")
    return validate_data(
        estimator,
        X,
        reset=reset,
        dtype=list(FLOAT_DTYPES),
        order="C",
        ensure_min_samples=ensure_min_samples,
        ensure_all_finite=ensure_all_finite,
    )


def check_labels(y, n_samples: int) -> np.ndarray:
    """Validate class labels for a class-conditional fit."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of class labels; got shape {y.shape}.")
    if y.shape[0] != n_samples:
        raise ValueError(
            f"y has {y.shape[0]} labels but X has {n_samples} samples; "
            "they must have the same length."
        )
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinity.")
    if y.dtype.kind not in "biufUS":
        try:
            y = y.astype(str)
        except (TypeError, ValueError) as exc:  # pragma: no cover - exotic objects
            raise TypeError("y must hold numbers or strings.") from exc
    return y


def check_fraction(value, name: str, *, low: float = 0.0, high: float = 1.0,
                   high_inclusive: bool = False) -> float:
    """A real number in (low, high) (or (low, high]); a clear error otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    value = float(value)
    ok = low < value < high or (high_inclusive and value == high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in ({low}, {high}{bracket}; got {value!r}.")
    return value


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}.")
    return int(value)


def raise_nonfinite(X_chunk: np.ndarray) -> None:
    """Explain why a chunk produced non-finite scores.

    Scoring computes first and checks the (cheap) output afterwards: a NaN or
    infinity anywhere in a row always makes that row's score non-finite, so a
    finite output proves finite input without a second pass over X.
    """
    if not np.all(np.isfinite(X_chunk)):
        raise ValueError("Input X contains NaN or infinity.")
    raise ValueError(
        "Scores overflowed: X holds values too large for its dtype "
        f"({X_chunk.dtype}); pass float64 or rescale the features."
    )
