"""gaussood: out-of-distribution detection on Gaussian contrastive embeddings.

InfoNCE training puts embeddings on a thin spherical shell with Gaussian
projections (Betser, Gofer, Levi & Gilboa, ICLR 2026). gaussood turns that into
scikit-learn style scorers with calibrated p-values. The numpy core imported
here needs only numpy, scipy, scikit-learn and faiss (never torch).
"""

from .combine import PValueCombination
from .evaluation import evaluate_embeddings
from .filter import AbstainingClassifier, FilterResult, OODFilter
from .gaussian import GaussianScorer
from .knn import KNNScorer
from .metrics import (aupr_in, aupr_out, auroc, fpr95_id_positive, fpr95_ood_positive,
                      fpr_at_tpr, ood_report)
from .norm_shell import NormShellScorer
from .persistence import load, save
from .views import gaussian_views
from . import shift  # noqa: E402,F401  (gaussood.shift.test: batch shift tests)

__version__ = "0.1.0"

__all__ = [
    "GaussianScorer", "NormShellScorer", "KNNScorer", "PValueCombination", "OODFilter",
    "AbstainingClassifier", "FilterResult", "gaussian_views", "save", "load",
    "auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "fpr95_id_positive",
    "fpr95_ood_positive", "ood_report", "evaluate_embeddings", "__version__",
]
