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


def test_held_out_calibration_fixes_a_shift_between_fit_and_new_id_rows():
    """Fit rows tighter than new ID rows (an encoder's own training images): calibrated on
    the fit rows the scorer flags far more than alpha; calibrated on other held-out ID
    rows it flags about alpha. AUROC, the peers and every other draw stay the same."""
    rng = np.random.default_rng(0)
    X_fit = rng.normal(size=(4000, 5))
    X_id = 1.25 * rng.normal(size=(6000, 5))
    ood = {"far": 3.0 + rng.normal(size=(1000, 5))}
    scorers = {"Gaussian": GaussianScorer(alpha=0.05, calibration="conformal"),
               "minus norm": MinusNorm()}
    kw = dict(seeds=(0, 1), n_eval=3000, alpha=0.05)
    plain = evaluate_embeddings(scorers, X_fit, None, X_id, ood, **kw)
    held = evaluate_embeddings(scorers, X_fit, None, X_id, ood, n_calibrate=3000, **kw)
    far_plain = [s["Gaussian"]["far"] for s in plain.per_seed]
    far_held = [s["Gaussian"]["far"] for s in held.per_seed]
    assert min(far_plain) > 0.15
    assert all(0.035 < f < 0.065 for f in far_held)  # 3,000 rows: sd of a rate ~0.4 points
    for a, b in zip(plain.per_seed, held.per_seed):
        for m in scorers:
            assert a[m]["metrics"] == b[m]["metrics"]
    assert held.data["n_calibrate"] == 3000 and plain.data["n_calibrate"] is None
    assert "ID calibration: 3000 other random images" in held.to_markdown()
    with pytest.raises(ValueError, match=r"n_calibrate must be in 1\.\.3000"):
        evaluate_embeddings(scorers, X_fit, None, X_id, ood, n_calibrate=3001, **kw)


def test_rest_calibrates_on_every_held_out_row_not_evaluated():
    rng = np.random.default_rng(2)
    X_fit, X_id = rng.normal(size=(300, 3)), rng.normal(size=(250, 3))
    ood = {"far": 4.0 + rng.normal(size=(100, 3))}
    scorers = {"Gaussian": GaussianScorer(alpha=0.1)}
    rest = evaluate_embeddings(scorers, X_fit, None, X_id, ood, n_eval=100, n_calibrate="rest")
    explicit = evaluate_embeddings(scorers, X_fit, None, X_id, ood, n_eval=100,
                                   n_calibrate=150)
    assert rest.data["n_calibrate"] == 150
    assert rest.per_seed[0]["Gaussian"]["far"] == explicit.per_seed[0]["Gaussian"]["far"]
    assert "ID calibration: 150 other random images" in rest.to_markdown()
    # nothing left over: the fit's own calibration, and the report says so
    lines = []
    none_left = evaluate_embeddings(scorers, X_fit, None, X_id, ood, n_calibrate="rest",
                                    log=lines.append)
    fit_only = evaluate_embeddings(scorers, X_fit, None, X_id, ood)
    assert none_left.data["n_calibrate"] is None
    assert none_left.per_seed[0]["Gaussian"]["far"] == fit_only.per_seed[0]["Gaussian"]["far"]
    assert any("no held-out ID row is left for calibration" in m for m in lines)
    assert "ID calibration: on the fit rows" in none_left.to_markdown()
    with pytest.raises(ValueError, match="n_calibrate must be an int, 'rest' or None"):
        evaluate_embeddings(scorers, X_fit, None, X_id, ood, n_calibrate="all")


def test_held_out_calibration_rows_are_disjoint_from_the_evaluated_ones():
    # X_id rows carry their index; a scorer that records what it was calibrated on
    X_id = np.arange(50, dtype=float)[:, None].repeat(2, axis=1)

    class Recorder(GaussianScorer, register=False):
        seen = []

        def calibrate(self, X):
            Recorder.seen.append(X[:, 0].copy())
            return super().calibrate(X)

        def score_pvalue_decision(self, X):
            Recorder.seen.append(-1 - X[:, 0])  # evaluated rows, negated
            return super().score_pvalue_decision(X)

    rng = np.random.default_rng(1)
    evaluate_embeddings({"r": Recorder()}, rng.normal(size=(200, 2)), None, X_id,
                        {"o": rng.normal(size=(30, 2))}, n_eval=30, n_calibrate=20)
    cal, ev = Recorder.seen[0], -1 - Recorder.seen[1]
    assert len(cal) == 20 and len(ev) == 30 and not set(cal) & set(ev)
    assert sorted(set(cal) | set(ev)) == list(range(50))
