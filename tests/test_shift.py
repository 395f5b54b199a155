"""gaussood.shift: batch tests with a known false-alarm rate, the CLI and the stream window.

Rates are checked against their binomial spread: with B batches at alpha = 5% the
rejection count has sd sqrt(B * 0.05 * 0.95); the bounds below are >= 3.5 sd wide.
"""

import numpy as np
import pytest
from scipy import stats

from gaussood import GaussianScorer, KNNScorer, shift
from gaussood.cli import main

ALPHA = 0.05


def conformal_pvalues(cal, batch):
    """(1 + #{cal <= s}) / (m + 1), as BaseScorer.pvalue_from_scores."""
    cal = np.sort(cal)
    return (1.0 + np.searchsorted(cal, batch, side="right")) / (cal.size + 1.0)


def rate_bounds(batches, alpha=ALPHA):
    sd = np.sqrt(batches * alpha * (1 - alpha))
    return alpha * batches - 3.5 * sd, alpha * batches + 3.5 * sd


# ------------------------------------------------------------- uniformity tests
@pytest.mark.parametrize("method", ["ks", "fisher", "hc"])
@pytest.mark.parametrize("m", [None, 400])
def test_null_batches_give_uniform_test_pvalues(method, m):
    """Under no shift the batch test's p-values are uniform (so the rate is alpha at
    every alpha): KS of 600 test p-values against U(0, 1). Conformal: a fresh
    calibration set per batch (the marginal guarantee), m = 400, n = 60."""
    rng = np.random.default_rng(3)
    n, batches = 60, 600
    out = []
    for _ in range(batches):
        if m is None:
            p = rng.random(n)
        else:
            p = conformal_pvalues(rng.normal(size=m), rng.normal(size=n))
        out.append(shift.test_pvalues(p, method, ALPHA, calibration_size=m, n_null=1999).pvalue)
    out = np.array(out)
    assert stats.kstest(out, "uniform").pvalue > 1e-3
    low, high = rate_bounds(batches)
    assert low <= np.sum(out <= ALPHA) <= high


def test_treating_conformal_pvalues_as_independent_inflates_the_rate():
    """n / m = 5: the calibration set's error is shared by every row of the batch. The
    naive one-sample KS flags most null batches; the exchangeable null keeps alpha."""
    rng = np.random.default_rng(4)
    naive = exact = 0
    batches = 300
    for _ in range(batches):
        p = conformal_pvalues(rng.normal(size=200), rng.normal(size=1000))
        naive += shift.test_pvalues(p, "ks").shift
        exact += shift.test_pvalues(p, "ks", calibration_size=200).shift
    assert naive > 0.3 * batches
    low, high = rate_bounds(batches)
    assert low <= exact <= high


def test_conformal_ks_is_the_two_sample_ks_test():
    """The statistic is scipy's two-sample KS of the batch scores against the
    calibration scores, and its Monte Carlo p-value matches the exact one."""
    rng = np.random.default_rng(5)
    cal, batch = rng.normal(size=300), rng.normal(size=40) + 0.3
    p = conformal_pvalues(cal, batch)
    result = shift.test_pvalues(p, "ks", calibration_size=300, n_null=19999)
    ref = stats.ks_2samp(batch, cal, method="exact")
    assert result.statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert result.pvalue == pytest.approx(ref.pvalue, abs=0.006)   # MC sd <= 0.0035


def test_continuous_laws_are_scipy_exact():
    rng = np.random.default_rng(6)
    p = rng.random(50) ** 1.3
    ks = shift.test_pvalues(p, "ks")
    assert ks.pvalue == pytest.approx(stats.kstest(p, "uniform").pvalue)
    fisher = shift.test_pvalues(p, "fisher")
    assert fisher.statistic == pytest.approx(-2 * np.log(p).sum())
    assert fisher.pvalue == pytest.approx(stats.chi2.sf(fisher.statistic, 100))
    assert shift.test_pvalues(p, "fisher").shift == (fisher.pvalue <= ALPHA)


def test_parametric_scorer_rate_and_power():
    """Exact F law on Gaussian rows: about alpha of ID batches flagged (one fit,
    conditional on it), and 3% of shifted rows in a batch of 1,000 are caught."""
    rng = np.random.default_rng(7)
    d = 8
    scorer = GaussianScorer("empirical", calibration="f").fit(rng.normal(size=(20000, d)))
    batches = 300
    flagged = sum(shift.test(scorer, rng.normal(size=(100, d)), "ks", n_null=999).shift
                  for _ in range(batches))
    low, high = rate_bounds(batches)
    assert low <= flagged <= high
    batch = rng.normal(size=(1000, d))
    batch[:30] += 2.5
    assert shift.test(scorer, batch, "hc").shift


def test_parametric_null_models_the_fits_estimation_error():
    """A fresh Gaussian fit per batch on few rows (n_fit = 40, d = 5): the rows of a
    batch share its error, so treating their F p-values as independent uniforms flags
    far too many ID batches (KS, Fisher); the null that simulates the fit (shift.test)
    gives uniform test p-values for every method, and its law is named."""
    rng = np.random.default_rng(13)
    batches, methods = 300, ("ks", "fisher", "hc")
    out, naive = {k: [] for k in methods}, dict.fromkeys(methods, 0)
    for _ in range(batches):
        scorer = GaussianScorer("empirical", calibration="f").fit(   # affine invariance:
            rng.normal(size=(40, 5)) * 2.0 + 1.0)                     # any mean and scale
        X = rng.normal(size=(100, 5)) * 2.0 + 1.0
        p = scorer.pvalue(X)
        for k in methods:
            result = shift.test(scorer, X, k, pvalues=p, n_null=999)
            out[k].append(result.pvalue)
            naive[k] += shift.test_pvalues(p, k).shift
    assert "n_fit = 40" in result.null
    low, high = rate_bounds(batches)
    for k in methods:
        assert stats.kstest(out[k], "uniform").pvalue > 1e-3
        assert low <= np.sum(np.array(out[k]) <= ALPHA) <= high
    assert naive["ks"] > high and naive["fisher"] > high


def test_wishart_eigenvalues_have_the_wishart_law():
    """Bidiagonal draws against closed forms: the trace of Wishart(k, I_d) is
    chi-square(k d), log det is a sum of log chi-square(k - i); the largest eigenvalue
    against direct draws of G^T G."""
    from scipy.special import digamma

    rng = np.random.default_rng(14)
    k, d = 12, 4
    lam = np.array([shift.wishart_eigenvalues(rng, k, d) for _ in range(4000)])
    assert stats.kstest(lam.sum(1), stats.chi2(k * d).cdf).pvalue > 1e-3
    expected = sum(digamma((k - i) / 2) + np.log(2) for i in range(d))
    assert np.log(lam).sum(1).mean() == pytest.approx(expected, abs=0.05)   # sd ~0.015
    direct = [np.linalg.eigvalsh((G := rng.normal(size=(k, d))).T @ G)[-1]
              for _ in range(4000)]
    assert stats.ks_2samp(lam[:, -1], direct).pvalue > 1e-3


# ------------------------------------------------------------------ reference
def heavy(rng, n, d):
    """Rows with a random scale (a Gaussian scale mixture): heavy-tailed, not Gaussian."""
    return rng.normal(size=(n, d)) * rng.gamma(0.6, 1.0, size=(n, 1))


def test_reference_null_keeps_alpha_where_the_f_law_fails():
    """Heavy-tailed rows, batches of 20 in d = 16: Hotelling's F law flags too many ID
    batches; with held-out reference rows (fresh per batch, 20 n of them) the rate is
    alpha and the test p-values are uniform."""
    rng = np.random.default_rng(15)
    d, batches = 16, 400
    scorer = GaussianScorer(random_state=0).fit(heavy(rng, 20000, d))
    f_law, ref = [], []
    for _ in range(batches):
        X = heavy(rng, 20, d)
        f_law.append(shift.test(scorer, X, "hotelling").pvalue)
        ref.append(shift.test(scorer, X, "hotelling", reference=heavy(rng, 400, d),
                              n_null=999).pvalue)
    low, high = rate_bounds(batches)
    assert np.sum(np.array(f_law) <= ALPHA) > high
    assert low <= np.sum(np.array(ref) <= ALPHA) <= high
    assert stats.kstest(ref, "uniform").pvalue > 1e-3


def test_reference_is_checked():
    rng = np.random.default_rng(16)
    scorer = GaussianScorer(random_state=0).fit(rng.normal(size=(500, 4)))
    other = GaussianScorer(random_state=0).fit(rng.normal(size=(500, 4)))
    X = rng.normal(size=(50, 4))
    with pytest.raises(ValueError, match="reference has 3 features"):
        shift.test(scorer, X, "hotelling", reference=rng.normal(size=(200, 3)))
    with pytest.raises(ValueError, match="reference has 40 rows; batches of 50 rows need"):
        shift.test(scorer, X, "hotelling", reference=rng.normal(size=(40, 4)))
    with pytest.raises(ValueError, match="reference was built for another scorer"):
        shift.test(scorer, X, "hotelling",
                   reference=shift.Reference(other, rng.normal(size=(200, 4))))
    with pytest.raises(ValueError, match="reference is for method 'hotelling'"):
        shift.test(scorer, X, "ks", reference=rng.normal(size=(200, 4)))
    result = shift.test(scorer, X, "hotelling", reference=rng.normal(size=(200, 4)))
    assert "pooled with 200 reference rows" in result.null


def test_hotelling_in_the_normalised_space():
    """normalize="l2": the fit moments live in the L2 space, so the batch goes there too
    (raw rows were compared with L2 moments before)."""
    rng = np.random.default_rng(17)
    A = rng.normal(size=(3000, 5)) + 3.0
    scorer = GaussianScorer(normalize="l2").fit(A)
    B = A[:60] * 2.0           # the same directions: no shift in the L2 space
    l2 = lambda Y: Y / np.linalg.norm(Y, axis=1, keepdims=True)   # noqa: E731
    t2, p = direct_hotelling(l2(A), l2(B))
    result = shift.test(scorer, B, "hotelling")
    assert result.statistic == pytest.approx(t2, rel=1e-9)
    assert result.pvalue == pytest.approx(p, rel=1e-7)


# -------------------------------------------------------------------- Hotelling
def direct_hotelling(A, B):
    n1, n2, d = A.shape[0], B.shape[0], A.shape[1]
    pooled = ((n1 - 1) * np.cov(A.T) + (n2 - 1) * np.cov(B.T)) / (n1 + n2 - 2)
    diff = B.mean(0) - A.mean(0)
    t2 = n1 * n2 / (n1 + n2) * diff @ np.linalg.solve(pooled, diff)
    f = t2 * (n1 + n2 - d - 1) / (d * (n1 + n2 - 2))
    return t2, stats.f.sf(f, d, n1 + n2 - d - 1)


@pytest.mark.parametrize("labels", [False, True])
def test_hotelling_matches_direct_computation(labels):
    rng = np.random.default_rng(8)
    A = rng.normal(size=(900, 6)) @ rng.normal(size=(6, 6))
    y = rng.integers(0, 3, 900) if labels else None
    A = A + (np.eye(3)[y] @ rng.normal(size=(3, 6)) if labels else 0)
    B = A[:40] * 1.1 + 0.1
    scorer = GaussianScorer(random_state=0).fit(A, y)
    result = shift.test(scorer, B, "hotelling")
    t2, p = direct_hotelling(A, B)
    assert result.statistic == pytest.approx(t2, rel=1e-9)
    assert result.pvalue == pytest.approx(p, rel=1e-7, abs=1e-300)
    assert ("components pooled" in result.null) == labels


def test_hotelling_f_law_is_exact():
    """Fresh Gaussian fit rows and batch each time, small n: the F p-values are
    uniform (a chi-square approximation would not be, at n_fit = 25, d = 4)."""
    rng = np.random.default_rng(9)
    cov = np.diag([1.0, 2.0, 0.5, 3.0])
    out, chi2 = [], []
    for _ in range(2000):
        A = rng.multivariate_normal(np.zeros(4), cov, 25)
        centred = A - A.mean(0)
        t2, p, dfd = shift.hotelling_two_sample(25, A.mean(0), centred.T @ centred,
                                                rng.multivariate_normal(np.zeros(4), cov, 5))
        out.append(p)
        chi2.append(stats.chi2.sf(t2, 4))
    assert dfd == 25 + 5 - 4 - 1
    assert stats.kstest(out, "uniform").pvalue > 1e-3
    assert np.mean(np.array(chi2) <= ALPHA) > 0.08     # the large-n law over-rejects


# -------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def fitted():
    return GaussianScorer(random_state=0).fit(np.random.default_rng(10).normal(size=(500, 4)))


@pytest.mark.parametrize("batch, match", [
    (np.empty((0, 4)), "X_batch is empty"),
    (np.zeros(4), "X_batch must be a 2-D"),
    (np.zeros((5, 3)), "X_batch has 3 features"),
    (np.array([[0.0, np.nan, 0, 0]] * 3), "X_batch has NaN"),
    (np.array([["a"] * 4]), "X_batch must hold numbers"),
])
def test_bad_batches_are_refused(fitted, batch, match):
    with pytest.raises(ValueError, match=match):
        shift.test(fitted, batch)


def test_bad_arguments_are_refused(fitted):
    X = np.zeros((5, 4))
    with pytest.raises(ValueError, match="scorer .*not fitted"):
        shift.test(GaussianScorer(), X)
    with pytest.raises(TypeError, match="scorer must be"):
        shift.test(object(), X)
    with pytest.raises(ValueError, match="method must be"):
        shift.test(fitted, X, "t")
    for alpha in (0, 1, "0.05", np.nan):
        with pytest.raises(ValueError, match="alpha must be"):
            shift.test(fitted, X, alpha=alpha)
    with pytest.raises(ValueError, match="pvalues must have shape"):
        shift.test(fitted, X, pvalues=np.ones(3))
    knn = KNNScorer(n_neighbors=3).fit(np.random.default_rng(0).normal(size=(200, 4)))
    with pytest.raises(ValueError, match="'hotelling' needs a GaussianScorer"):
        shift.test(knn, X, "hotelling")
    with pytest.raises(ValueError, match="not conformal p-values"):
        shift.test_pvalues([0.5, 0.3], calibration_size=10)
    with pytest.raises(ValueError, match=r"pvalues must lie in \[0, 1\]"):
        shift.test_pvalues([0.5, np.nan])


# ------------------------------------------------------------------------- CLI
@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(11)
    np.save(tmp_path / "train.npy", rng.normal(size=(3000, 6)))
    np.save(tmp_path / "id.npy", rng.normal(size=(300, 6)))
    np.save(tmp_path / "shifted.npy", rng.normal(size=(300, 6)) + 0.4)
    np.save(tmp_path / "narrow.npy", rng.normal(size=(300, 5)))
    assert main(["fit", "--embeddings", str(tmp_path / "train.npy"), "--scorer", "gaussian",
                 "--out", str(tmp_path / "g.npz")]) == 0
    return tmp_path


@pytest.mark.parametrize("method", ["ks", "hotelling"])
def test_cli_exit_status(files, capsys, method):
    base = ["shift", "--scorer", str(files / "g.npz"), "--method", method, "--embeddings"]
    assert main(base + [str(files / "id.npy")]) == 0
    assert "no shift at alpha 0.05" in capsys.readouterr().out
    assert main(base + [str(files / "shifted.npy")]) == 1
    out = capsys.readouterr().out
    assert "SHIFT at alpha 0.05" in out and f"{method}: statistic" in out


@pytest.mark.parametrize("extra, match", [
    (["--embeddings", "narrow.npy"], "have 5 features but the scorer"),
    (["--embeddings", "missing.npy"], "not found"),
    (["--embeddings", "id.npy", "--method", "t"], "invalid choice"),
    (["--embeddings", "id.npy", "--alpha", "2"], "alpha"),
])
def test_cli_bad_input_exits_2(files, capsys, extra, match):
    extra = [str(files / a) if a.endswith(".npy") else a for a in extra]
    code = main(["shift", "--scorer", str(files / "g.npz"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert err.startswith("gaussood shift: error: ")


def test_cli_reference_is_the_python_permutation_test(files, capsys):
    """--reference HELD.npy: Hotelling's permutation null, as shift.test(reference=)."""
    import gaussood
    from gaussood import shift

    rng = np.random.default_rng(21)
    np.save(files / "held.npy", rng.normal(size=(600, 6)))
    base = ["shift", "--scorer", str(files / "g.npz"), "--method", "hotelling",
            "--reference", str(files / "held.npy"), "--embeddings"]
    assert main(base + [str(files / "id.npy")]) == 0
    out = capsys.readouterr().out
    expected = shift.test(gaussood.load(files / "g.npz"), np.load(files / "id.npy"),
                          "hotelling", 0.05, reference=np.load(files / "held.npy"))
    assert f"p-value {expected.pvalue:.4g}" in out and f"null: {expected.null}" in out
    assert main(base + [str(files / "shifted.npy")]) == 1
    assert "SHIFT at alpha 0.05" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    (["--embeddings", "id.npy", "--reference", "id.npy", "--method", "ks"],
     "--reference goes with --method hotelling"),
    (["--embeddings", "id.npy", "--reference", "narrow.npy", "--method", "hotelling"],
     "--reference"),
    (["--embeddings", "id.npy", "--encoder", "enc.pt"], "apply to --images only"),
    ([], "give exactly one of --embeddings"),
])
def test_cli_reference_and_images_usage_exits_2(files, capsys, extra, match):
    extra = [str(files / a) if a.endswith((".npy", ".pt")) else a for a in extra]
    code = main(["shift", "--scorer", str(files / "g.npz"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and match in err, err
    assert "Traceback" not in err


# ---------------------------------------------------------------- stream window
def test_stream_window_alarms():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    from gaussood import OODFilter

    rng = np.random.default_rng(12)
    filt = OODFilter(GaussianScorer(random_state=0), progress=False).fit(
        rng.normal(size=(4000, 8)))
    rows = np.vstack([rng.normal(size=(600, 8)), rng.normal(size=(600, 8)) + 0.5])
    loader = DataLoader(TensorDataset(torch.from_numpy(rows), torch.arange(1200)),
                        batch_size=128)
    plain = list(filt.stream(loader))
    out = list(filt.stream(loader, window=200, shift_method="fisher"))
    assert len(out) == len(plain)
    for (batch, _), ref in zip(out, plain):
        assert all(torch.equal(a, b) for a, b in zip(batch, ref))  # same rows as without
    windows = [w for _, ws in out for w in ws]
    assert len(windows) == 6 and all(w.n == 200 and w.method == "fisher" for w in windows)
    assert [w.shift for w in windows] == [False] * 3 + [True] * 3
    direct = shift.test(filt.scorer_, rows[:200], "fisher")
    assert windows[0].pvalue == pytest.approx(direct.pvalue)
    held = rng.normal(size=(1000, 8))
    out = list(filt.stream(loader, window=200, shift_method="hotelling", shift_reference=held))
    windows = [w for _, ws in out for w in ws]
    assert [w.shift for w in windows] == [False] * 3 + [True] * 3
    direct = shift.test(filt.scorer_, rows[:200], "hotelling", reference=held)
    assert windows[0].pvalue == direct.pvalue and "reference rows" in windows[0].null
    with pytest.raises(ValueError, match="shift_reference is for shift_method='hotelling'"):
        next(filt.stream(loader, window=200, shift_reference=held))
    with pytest.raises(ValueError, match="window must be"):
        next(filt.stream(loader, window=0))


# ------------------------------------------------------------------ benchmark export
def test_benchmark_export_round_trip(tmp_path, monkeypatch):
    """benchmarks/shift.py --export writes the embeddings shift_alibi.py reads back: the
    seed split, the test and Fashion-MNIST rows, one array per covariate shift of the
    split's pool rows (embed_all replaced by a tiny fake)."""
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.setattr(sys, "path", [str(Path(__file__).resolve().parents[1] / "benchmarks"),
                                      *sys.path])   # restored after the test
    try:
        bshift = importlib.import_module("shift")
        alibi = importlib.import_module("shift_alibi")
    finally:
        sys.modules.pop("shift", None)   # a top-level 'shift' is not gaussood.shift

    def fake_embed_all(cfg, root, pool_idx):
        rng = np.random.default_rng(1)
        emb = {"train": rng.normal(size=(50, 4)), "test": rng.normal(size=(10000, 4)),
               "fashion": rng.normal(size=(30, 4))}
        emb.update({name: rng.normal(size=(pool_idx.size, 4)) for name in bshift.SHIFTS})
        fake_embed_all.emb, fake_embed_all.pool = emb, pool_idx
        return emb

    monkeypatch.setattr(bshift, "embed_all", fake_embed_all)
    assert bshift.main(["--export", str(tmp_path), "--root", str(tmp_path)]) == 0
    meta, emb, split = alibi.load(tmp_path)
    m = bshift.CONFIG["m_calibration"]
    expected = np.random.default_rng(bshift.CONFIG["seed"]).permutation(10000)
    np.testing.assert_array_equal(split, expected)
    np.testing.assert_array_equal(fake_embed_all.pool, np.sort(expected[m:]))
    assert meta["config"]["m_calibration"] == m and meta["shifts"] == list(bshift.SHIFTS)
    assert sorted(emb) == sorted(["test", "fashion", *bshift.SHIFTS])
    assert meta["files"]["jpeg q30"] == "jpeg_q30.npy"
    for name, X in emb.items():
        np.testing.assert_array_equal(X, fake_embed_all.emb[name])
    with pytest.raises(SystemExit, match="shift.py --export"):
        alibi.load(tmp_path / "missing")
