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
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        value = y[np.flatnonzero(y != np.round(y))[0]]
        raise ValueError(
            f"y holds non-integral float labels (e.g. {value!r}): y is class labels "
            "(integers or strings), and every distinct value would be a class with its "
            "own mean and d x d moments (1,000 float values on 4,000 rows: 1,000 "
            "classes). Cast y to int if its values are classes; scores or regression "
            "targets are not labels.")
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


def check_moments_finite(moments: dict, what: str = "X") -> None:
    """A clear error when moment sums overflowed float64 (values near 1e77 or more)."""
    for key in ("mean", "scatter", "fourth"):
        if key in moments and not np.all(np.isfinite(moments[key])):
            raise ValueError(
                f"{what} holds values too large to fit: their {'fourth' if key == 'fourth' else 'second'}"
                "-order moments overflow float64 (the fit needs sums of |x|^4, so |x| must "
                "stay well below 1e77). Rescale the features (e.g. divide by their scale).")


# --------------------------------------------------------- fitted-state schema
class StateError(ValueError):
    """A fitted attribute that is missing or inconsistent (raised by ``FittedState``)."""


class FittedState:
    """Checks a scorer's fitted attributes (used by ``gaussood.load``).

    Shapes are written with symbols (``("K", "d")``): a symbol's first use binds
    it, later uses must agree; ``d`` is bound to ``n_features_in_``. ``fold=True``:
    the scorer is a CV+ fold model (its state has no merge moments, no folds).
    """

    def __init__(self, scorer, *, fold: bool = False):
        self.scorer = scorer
        self.fold = fold
        self.dims = {"d": self.integer("n_features_in_", low=1)}

    def fail(self, message: str):
        raise StateError(message)

    def get(self, name, optional=False):
        if not hasattr(self.scorer, name):
            if optional:
                return None
            self.fail(f"{name} is missing")
        return getattr(self.scorer, name)

    def array(self, name, shape, *, kind="f", finite=True, low=None, optional=False,
              none_ok=False):
        value = self.get(name, optional)
        if value is None and (optional or none_ok):
            return None
        if not isinstance(value, np.ndarray):
            self.fail(f"{name} must be an array; got {type(value).__name__}")
        if kind is not None and value.dtype.kind not in kind:
            self.fail(f"{name} has dtype {value.dtype}")
        if value.ndim != len(shape):
            self.fail(f"{name} has shape {value.shape}; expected {len(shape)} dimensions "
                      f"{tuple(shape)}")
        for axis, (size, symbol) in enumerate(zip(value.shape, shape)):
            if isinstance(symbol, int):
                if size != symbol:
                    self.fail(f"{name} has shape {value.shape}; expected {tuple(shape)}")
            elif self.dims.setdefault(symbol, size) != size:
                want = tuple(self.dims.get(s, s) for s in shape)
                self.fail(f"{name} has shape {value.shape}; expected {want}")
        if value.dtype.kind in "fc":
            if finite and not np.all(np.isfinite(value)):
                self.fail(f"{name} holds NaN or infinity")
            if low is not None and value.size and not np.all(value >= low):
                self.fail(f"{name} holds values below {low}")
        return value

    def number(self, name, *, low=None, high=None, finite=True, optional=False,
               allow=()):
        value = self.get(name, optional)
        if value is None and optional:
            return None
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            self.fail(f"{name} must be a number; got {value!r}")
        value = float(value)
        if value in allow:
            return value
        if np.isnan(value) or (finite and not np.isfinite(value)):
            self.fail(f"{name} is {value!r}; it must be finite")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(f"{name} is {value!r}; it must lie in [{low}, {high}]")
        return value

    def integer(self, name, *, low=None, high=None):
        value = self.get(name)
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            self.fail(f"{name} must be an integer; got {value!r}")
        value = int(value)
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(f"{name} is {value}; it must lie in [{low}, {high}]")
        return value

    def choice(self, name, choices):
        value = self.get(name)
        if not isinstance(value, str) or value not in choices:
            self.fail(f"{name} is {value!r}; it must be one of {sorted(choices)}")
        return value
