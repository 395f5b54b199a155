"""gaussood.evaluate_embeddings: the numpy-only evaluation core, with peers as ordinary
objects (fit / score_samples), and the benchmark's one table of settings and quick mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from gaussood import GaussianScorer, NormShellScorer, evaluate_embeddings
from gaussood.evaluation import Method, OODSet

REPO = Path(__file__).resolve().parents[1]


class MinusNorm:
    """A detector that is no estimator: fit/score_samples only, no threshold."""

    def fit(self, X, y=None):
        self.center_ = X.mean(axis=0)
        return self

    def score_samples(self, X):
        return -np.linalg.norm(X - self.center_, axis=1)


class Broken(MinusNorm):
    def fit(self, X, y=None):
        raise RuntimeError("no luck")


def data(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(600, 6)), np.arange(600) % 3, rng.normal(size=(300, 6)),
            {"near": OODSet(rng.normal(size=(300, 6)) + 0.8, "near", "shifted"),
             "far": 4.0 * rng.normal(size=(300, 6))})


def test_scorers_and_peers_on_the_same_rows():
    X, y, X_id, ood = data()
    ev = evaluate_embeddings(
        {"Gaussian": (GaussianScorer(alpha=0.1), True), "shell": NormShellScorer(alpha=0.1),
         "norm": Method(MinusNorm(), note="distance to the mean"),
         "iforest": IsolationForest(n_estimators=20, random_state=123),
         "broken": Method(Broken(), optional=True, note="fails")},
        X, y, X_id, ood, seeds=[0, 1], n_fit=500, n_eval=200, alpha=0.1, name="toy")
    s = ev.summary
    assert s["Gaussian"]["sets"]["far"]["auroc"]["mean"] > 0.95
    assert len(s["Gaussian"]["sets"]["near"]["auroc"]["values"]) == 2
    assert s["Gaussian"]["note"].startswith("calibration ") and s["norm"]["far"] is None
    assert 0.0 <= s["iforest"]["far"]["mean"] <= 1.0          # from predict
    assert s["broken"] == {"error": "RuntimeError: no luck", "note": "fails"}
    # the distance to the mean is the AUROC computed by hand on seed 0's draws
    rng = np.random.default_rng(0)
    rows = np.sort(rng.permutation(600)[:500])
    held = X_id[np.sort(rng.permutation(300)[:200])]
    near = ood["near"].data[np.sort(rng.permutation(300)[:200])]
    center = X[rows].mean(axis=0)
    from sklearn.metrics import roc_auc_score
    want = roc_auc_score(np.r_[np.ones(200), np.zeros(200)],
                         -np.linalg.norm(np.vstack([held, near]) - center, axis=1))
    assert ev.per_seed[0]["norm"]["metrics"]["near"]["auroc"] == pytest.approx(want, abs=1e-12)
    md = ev.to_markdown()
    assert "| broken | failed |" in md and "n/a: the method has no threshold" in md
    assert "pytorch" not in md
    with pytest.raises(RuntimeError, match="no luck"):            # not optional: raised
        evaluate_embeddings({"broken": Broken()}, X, None, X_id, {"far": ood["far"]})


def test_the_core_imports_no_torch():
    code = ("import sys, numpy as np; from gaussood import evaluate_embeddings, GaussianScorer;"
            "r = np.random.default_rng(0); evaluate_embeddings({'g': GaussianScorer()}, "
            "r.normal(size=(300, 3)), None, r.normal(size=(100, 3)), {'o': r.normal(size=(100, 3))"
            " + 2}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_quick_mode_is_defined_once():
    from gaussood.bench_settings import OOD_SETS, QUICK, SETTINGS, near_sets, pool, quick

    seeds, sizes = quick([4, 5, 6], n_fit=40_000, n_eval=500, ee_max=3_000, lof_max=10_000)
    assert seeds == [4] and sizes == {"n_fit": QUICK["n_fit"], "n_eval": 500,
                                      "ee_max": QUICK["ee_max"], "lof_max": QUICK["lof_max"]}
    assert pool(1000, True) == 2000 and pool(1000, False) is None
    assert near_sets() == ["cifar100"]
    assert all(k in OOD_SETS for k in SETTINGS["cifar10"].ood)
    with pytest.raises(ValueError, match="n_seeds"):
        quick([0], n_seeds=3)
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cifar10_ood
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    args = cifar10_ood.parse_args(["--quick"])
    assert (args.seeds, args.n_fit, args.n_eval, args.ee_max, args.lof_max) == (
        [0], QUICK["n_fit"], QUICK["n_eval"], QUICK["ee_max"], QUICK["lof_max"])
