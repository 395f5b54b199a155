"""Rank-based OOD-detection metrics.

Convention: a score is *higher for in-distribution (ID)* samples.  Every
metric is computed in float64 from the ranks of the scores through
scikit-learn (no sigmoid, no probability calibration), so it is invariant to
any strictly increasing transform of the scores.

Two conventions for "FPR at 95% TPR" coexist in the literature:

* ``positive="id"`` (ODIN, Energy, KNN, SSD papers): the fraction of OOD
  samples still accepted when the threshold keeps at least 95% of ID samples.
* ``positive="ood"`` (OpenOOD, pytorch-ood): OOD is the positive class
  (score ``-s``); the fraction of ID samples flagged when at least 95% of OOD
  samples are caught.

They generally differ; :func:`ood_report` reports both under explicit names.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Union

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = [
    "auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "fpr95_id_positive",
    "fpr95_ood_positive", "ood_report", "OODReport",
]

_METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95_id_positive", "fpr95_ood_positive")


def _as_scores(x: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # e.g. ragged nested lists
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind != "O" or any(isinstance(v, (str, bytes)) for v in arr.flat):
            raise TypeError(f"{name} must contain real numbers, got dtype {arr.dtype}")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must contain real numbers: {exc}") from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array (or an (n, 1) column), got shape {arr.shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _validate(
    scores_in: ArrayLike, scores_out: ArrayLike, out_name: str = "scores_out"
) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert both score sets to finite float64 1-D arrays."""
    s_in, s_out = _as_scores(scores_in, "scores_in"), _as_scores(scores_out, out_name)
    for arr, name in ((s_in, "scores_in"), (s_out, out_name)):
        if arr.size == 0:
            raise ValueError(
                f"{name} is empty: both ID (scores_in) and OOD (scores_out) scores "
                "are needed (a single-class input has no ROC curve)"
            )
    return s_in, s_out


def _labels_scores(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.ones(s_in.size, dtype=np.int64), np.zeros(s_out.size, dtype=np.int64)])
    return y, np.concatenate([s_in, s_out])


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the ROC curve with ID as the positive class.

    Equals ``P(s_in > s_out) + 0.5 * P(s_in == s_out)`` over all ID/OOD pairs.

    Parameters
    ----------
    scores_in, scores_out : array_like
        1-D scores of ID and OOD samples (higher = more in-distribution).

    Returns
    -------
    float
        AUROC in [0, 1]; 0.5 is chance level.

    Examples
    --------
    >>> auroc([3, 2, 1], [2, 0])  # 4 wins + one tie (2 vs 2) out of 6 pairs
    0.75
    """
    y, s = _labels_scores(*_validate(scores_in, scores_out))
    return float(roc_auc_score(y, s))


def aupr_in(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Average precision with ID as the positive class, scores as they are.

    Examples
    --------
    >>> round(aupr_in([4, 3, 1], [2, 0]), 4)  # 1/3*1 + 1/3*1 + 1/3*3/4 = 11/12
    0.9167
    """
    y, s = _labels_scores(*_validate(scores_in, scores_out))
    return float(average_precision_score(y, s))


def aupr_out(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Average precision with OOD as the positive class, scores negated.

    Examples
    --------
    >>> round(aupr_out([4, 3, 1], [2, 0]), 4)  # 1/2*1 + 1/2*2/3 = 5/6
    0.8333
    """
    y, s = _labels_scores(*_validate(scores_in, scores_out))
    return float(average_precision_score(1 - y, -s))


def fpr_at_tpr(
    scores_in: ArrayLike,
    scores_out: ArrayLike,
    tpr: float = 0.95,
    positive: Literal["id", "ood"] = "id",
) -> float:
    """False-positive rate at the first ROC point whose TPR reaches ``tpr``.

    Parameters
    ----------
    scores_in, scores_out : array_like
        1-D scores (higher = more in-distribution).
    tpr : float, default 0.95
        Target true-positive rate, in (0, 1].
    positive : {"id", "ood"}, default "id"
        ``"id"``: fraction of OOD accepted (``score >= threshold``) once at
        least ``tpr`` of ID is kept (ODIN/Energy/KNN/SSD).  ``"ood"``: OOD is
        positive with score ``-s``; fraction of ID flagged once at least
        ``tpr`` of OOD is caught (OpenOOD/pytorch-ood).  Tied scores move
        together (no interpolation inside a tied block).

    Examples
    --------
    >>> ind, ood = [1, 2, 3, 4], [0, 2.5]
    >>> fpr_at_tpr(ind, ood, tpr=0.75)  # keep 2,3,4 -> accepts OOD 2.5
    0.5
    >>> fpr_at_tpr(ind, ood, tpr=0.5, positive="ood")  # catch 0 -> no ID flagged
    0.0
    """
    tpr_f = float(tpr)
    if not 0.0 < tpr_f <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr!r}")
    if positive not in ("id", "ood"):
        raise ValueError(f"positive must be 'id' or 'ood', got {positive!r}")
    y, s = _labels_scores(*_validate(scores_in, scores_out))
    if positive == "ood":
        y, s = 1 - y, -s
    fpr_curve, tpr_curve, _ = roc_curve(y, s, drop_intermediate=False)
    idx = int(np.argmax(tpr_curve >= tpr_f))  # tpr_curve ends at 1.0, so always found
    return float(fpr_curve[idx])


def fpr95_id_positive(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """FPR@95TPR with ID positive: fraction of OOD accepted when 95% of ID is kept.

    Examples
    --------
    >>> fpr95_id_positive([2, 3, 4], [0, 1])
    0.0
    """
    return fpr_at_tpr(scores_in, scores_out, tpr=0.95, positive="id")


def fpr95_ood_positive(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """FPR@95TPR with OOD positive: fraction of ID flagged when 95% of OOD is caught.

    Examples
    --------
    >>> fpr95_ood_positive([0, 1], [2, 3, 4])  # reversed: every ID is flagged
    1.0
    """
    return fpr_at_tpr(scores_in, scores_out, tpr=0.95, positive="ood")


_COLUMNS = ("AUROC", "AUPR-In", "AUPR-Out", "FPR@95TPR (ID+)", "FPR@95TPR (OOD+)")
_FOOTNOTE = (
    "FPR@95TPR (ID+): fraction of OOD accepted when 95% of ID is kept "
    "(ODIN/Energy/KNN/SSD convention); FPR@95TPR (OOD+): fraction of ID flagged "
    "when 95% of OOD is caught (OpenOOD/pytorch-ood convention). "
    "Higher score = more in-distribution."
)


class OODReport(dict):
    """Mapping OOD-set name -> dict of metrics, as built by :func:`ood_report`."""

    def to_markdown(self, percent: bool = True) -> str:
        """Markdown table, one row per OOD set, plus a footnote on the FPR conventions."""
        unit = " (%)" if percent else ""
        head = ["OOD set"] + [c + unit for c in _COLUMNS] + ["n_in", "n_out"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for set_name, m in self.items():
            vals = [f"{100 * m[k]:.2f}" if percent else f"{m[k]:.4f}" for k in _METRIC_KEYS]
            cells = [str(set_name).replace("|", "\\|"), *vals, str(m["n_in"]), str(m["n_out"])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\n" + _FOOTNOTE

    def __str__(self) -> str:
        return self.to_markdown()

    def to_dict(self) -> dict[str, dict[str, Union[float, int]]]:
        """Plain, JSON-serialisable ``dict`` copy."""
        return {str(k): dict(v) for k, v in self.items()}


def ood_report(
    scores_in: ArrayLike,
    scores_out: Union[ArrayLike, Mapping[str, ArrayLike]],
    *,
    name: str = "ood",
) -> OODReport:
    """All metrics for one or several OOD sets against the same ID scores.

    Parameters
    ----------
    scores_in : array_like
        ID scores (higher = more in-distribution).
    scores_out : array_like or mapping of str to array_like
        OOD scores, or several OOD sets keyed by name.
    name : str, default "ood"
        Row name used when ``scores_out`` is a single array.

    Returns
    -------
    OODReport
        ``{set_name: {"auroc", "aupr_in", "aupr_out", "fpr95_id_positive",
        "fpr95_ood_positive", "n_in", "n_out"}}``.

    Examples
    --------
    >>> rep = ood_report([2, 3, 4], {"svhn": [0, 1], "lsun": [1, 3]})
    >>> rep["svhn"]["auroc"], rep["lsun"]["auroc"]
    (1.0, 0.75)
    >>> print(rep.to_markdown().splitlines()[2])
    | svhn | 100.00 | 100.00 | 100.00 | 0.00 | 0.00 | 3 | 2 |
    """
    sets = dict(scores_out) if isinstance(scores_out, Mapping) else {name: scores_out}
    if not sets:
        raise ValueError("scores_out mapping is empty: at least one OOD set is needed")
    report = OODReport()
    for set_name, s_out in sets.items():
        label = f"scores_out[{set_name!r}]" if isinstance(scores_out, Mapping) else "scores_out"
        s_in_arr, s_out_arr = _validate(scores_in, s_out, out_name=label)
        report[set_name] = {
            "auroc": auroc(s_in_arr, s_out_arr),
            "aupr_in": aupr_in(s_in_arr, s_out_arr),
            "aupr_out": aupr_out(s_in_arr, s_out_arr),
            "fpr95_id_positive": fpr95_id_positive(s_in_arr, s_out_arr),
            "fpr95_ood_positive": fpr95_ood_positive(s_in_arr, s_out_arr),
            "n_in": int(s_in_arr.size),
            "n_out": int(s_out_arr.size),
        }
    return report
