"""gaussood.dask on a LocalCluster of 2 worker processes: the same model and
the same scores as in memory, alpha honoured on fresh data, files read chunk
by chunk. Skipped where dask or distributed is missing."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import gaussood.dask as gd  # noqa: E402
from gaussood import GaussianScorer, KNNScorer, NormShellScorer  # noqa: E402
from gaussood._threads import blas_thread_env  # noqa: E402

N, D, CHUNK = 12_000, 24, 1_500


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            env=blas_thread_env(1), silence_logs=40)
    with cluster, distributed.Client(cluster) as c:
        yield c


def data(dtype=np.float64, n=N, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.random.default_rng(98).normal(size=(D, D)))
    mix = q / np.sqrt(1.0 + np.arange(D))[:, None]  # decaying spectrum, condition number D
    y = rng.integers(0, 5, size=n)
    centres = 3.0 * np.random.default_rng(99).normal(size=(5, D))
    X = centres[y] + rng.normal(size=(n, D)) @ mix + 2.0
    return X.astype(dtype), y


def fitted_attributes(scorer):
    return {k: v for k, v in vars(scorer).items() if k.endswith("_") and not k.startswith("_")}


def assert_same_model(ours, ref, rtol):
    a, b = fitted_attributes(ours), fitted_attributes(ref)
    assert a.keys() == b.keys()
    # whitening amplifies the rounding of the covariance by its condition number
    cond = 1.0 if b.get("whitener_") is None else np.linalg.cond(b["whitener_"]) ** 2
    for key, want in b.items():
        got, tol = a[key], rtol
        if key == "whitener_" and want is not None:  # eigenvectors: compare W W^T
            got, want, tol = got @ got.T, want @ want.T, rtol * cond
        elif key in ("whitened_means_", "law_misfit_"):  # law_misfit_: distances, whitened
            tol = rtol * cond
        if isinstance(want, (np.ndarray, float)) and np.asarray(want).dtype.kind == "f":
            want = np.asarray(want)
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            if key == "whitened_means_":  # whitened units; exactly 0 for one component
                scale = max(scale, 1.0)
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=key)
        elif isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want, err_msg=key)
        else:
            assert got == want, key


def test_import_gaussood_does_not_import_dask():
    code = "import sys, gaussood; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


CASES = {
    "gaussian-pooled": (lambda: GaussianScorer("ledoit_wolf", calibration="f"), False),
    "gaussian-class": (lambda: GaussianScorer("oas", calibration="chi2"), True),
    "gaussian-empirical-class": (lambda: GaussianScorer("empirical", calibration="f"), True),
    "shell": (lambda: NormShellScorer(calibration="shell"), False),
    "shell-whiten": (lambda: NormShellScorer(whiten=True, calibration="shell"), False),
}


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-6)])
@pytest.mark.parametrize("case", list(CASES))
def test_fit_equals_in_memory(client, case, dtype, rtol):
    make, labelled = CASES[case]
    X, y = data(dtype)
    y = y if labelled else None
    Xd = da.from_array(X, chunks=(CHUNK, D))
    yd = None if y is None else da.from_array(y, chunks=2_000)  # rechunked to X's rows
    ours = gd.fit(make(), Xd, yd)
    ref = make().fit(X, y)
    assert_same_model(ours, ref, rtol)
    assert ours.offset_ == pytest.approx(ref.offset_, rel=1e-12)


def test_contamination_offset_equals_in_memory(client):
    X, y = data()
    Xd = da.from_array(X, chunks=(CHUNK, D))
    ours = gd.fit(GaussianScorer(contamination=0.1, calibration="f"), Xd, y)
    ref = GaussianScorer(contamination=0.1, calibration="f").fit(X, y)
    assert ours.offset_ == pytest.approx(ref.offset_, rel=1e-9)


@pytest.mark.parametrize("make", [lambda: GaussianScorer(random_state=0),
                                  lambda: GaussianScorer(calibration="cv+", random_state=0),
                                  lambda: NormShellScorer(random_state=0),
                                  lambda: KNNScorer(n_neighbors=10, random_state=0)])
def test_scores_match_in_memory(client, make):
    """Dask chunks of 1,234 rows against in-memory chunks of ``chunk_size`` rows.

    A different row blocking: float32 GEMM may round differently, which BLAS does not
    promise against (seen on AMD EPYC with OpenBLAS's Haswell kernels: 4,303 of 12,000
    scores differed, by at most 7.9e-7 relative). So scores agree to float32 rounding,
    and a p-value or decision may move only for the few rows whose score sits within
    that rounding of a calibration score or of the threshold: by one calibration rank
    per model that ranks it (the fold models too, under cv+).
    """
    X, _ = data(np.float32)
    scorer = make().fit(X[:6_000])
    Xd = da.from_array(X, chunks=(1_234, D))  # not a multiple of chunk_size
    got = {}
    for method in ("score_samples", "decision_function", "predict", "pvalue"):
        lazy = getattr(gd, method)(scorer, Xd)
        assert isinstance(lazy, da.Array)
        got[method] = lazy.compute()
    ref = scorer.score_pvalue_decision(X)
    scale = float(np.max(np.abs(ref.score)))
    np.testing.assert_allclose(got["score_samples"], ref.score, rtol=1e-5, atol=1e-6 * scale)
    m = scorer.calibration_scores_.shape[0]
    models = len(scorer.fold_states_) if scorer.calibration_ == "cv+" else 1
    step = models / (m + 1.0)  # the most a p-value can move for one rounding
    moved = np.abs(got["pvalue"] - ref.pvalue)
    assert moved.max() <= step + 1e-12
    assert np.mean(moved > 0) <= 0.05, np.mean(moved > 0)
    if scorer.calibration_ == "cv+":  # decision = p-value - constant
        assert np.max(np.abs(got["decision_function"] - ref.decision)) <= step + 1e-12
    else:
        np.testing.assert_allclose(got["decision_function"], ref.decision,
                                   rtol=1e-5, atol=1e-6 * scale)
    assert np.mean(got["predict"] != np.where(ref.flagged, -1, 1)) <= 0.01
    assert np.array_equal(got["predict"] == -1, got["decision_function"] < 0)


def test_scorer_shipped_once_to_every_worker(client):
    X, _ = data()
    scorer = GaussianScorer().fit(X)
    scores = gd.score_samples(scorer, da.from_array(X, chunks=(1_000, D)))
    graph = dict(scores.__dask_graph__())
    deps = [set(task.dependencies) for key, task in graph.items()
            if isinstance(key, tuple) and key[0].startswith("_apply")]
    assert len(deps) == 12  # one task per chunk, each needing its chunk and the scorer
    shared = set.intersection(*deps)
    assert len(shared) == 1 and all(len(d) == 2 for d in deps)
    (key,) = shared
    assert key.startswith("gaussood-scorer-")
    assert len(client.who_has()[key]) == 2  # scattered to both workers, before any task
    scores.compute()


def test_knn_fit_and_scores_equal_in_memory(client):
    X, _ = data(np.float32, n=5_000)
    ours = gd.fit(KNNScorer(n_neighbors=10, random_state=0), da.from_array(X, chunks=(700, D)))
    ref = KNNScorer(n_neighbors=10, random_state=0).fit(X)
    np.testing.assert_array_equal(ours.embeddings_, ref.embeddings_)
    np.testing.assert_array_equal(ours.calibration_scores_, ref.calibration_scores_)
    assert ours.offset_ == ref.offset_
    Xt, _ = data(np.float32, n=3_000, seed=1)
    np.testing.assert_array_equal(gd.score_samples(ours, Xt).compute(), ref.score_samples(Xt))


@pytest.mark.parametrize("make", [lambda: GaussianScorer(alpha=0.05, random_state=0),
                                  lambda: NormShellScorer(alpha=0.05, random_state=0)])
def test_conformal_alpha_on_fresh_data(client, make):
    X, y = data(n=40_000)
    scorer = gd.fit(make(), da.from_array(X, chunks=(2_500, D)), calibration_rows=5_000)
    assert scorer.calibration_ == "conformal"
    assert scorer.calibration_scores_.shape == (5_000,)  # exactly that many rows held out
    assert int(scorer.moment_count_.sum()) == 40_000  # the final model uses every row
    fresh, _ = data(np.float32, n=60_000, seed=7)
    rate = float((gd.predict(scorer, da.from_array(fresh, chunks=(15_000, D))) == -1)
                 .mean().compute())
    assert abs(rate - 0.05) <= 0.01, rate


def test_conformal_ignores_row_order_and_chunking(client):
    """Rows sorted by class (whole chunks of one class) or shuffled, chunks of 500 to
    20,000 rows: the held-out rows are the same ones, spread over every class, and
    alpha = 5% holds on fresh data. Holding out whole chunks flagged 0.00% of fresh
    data on the sorted rows in chunks of 20,000 (one class per held-out chunk)."""
    n, alpha = 40_000, 0.05
    X, y = data(n=n, seed=3)
    fresh, _ = data(n=100_000, seed=4)
    orders = {"sorted": np.argsort(y, kind="stable"), "shuffled": np.arange(n)}
    for name, order in orders.items():
        reference = None
        for chunk in (500, 2_000, 20_000):
            scorer = gd.fit(GaussianScorer(alpha=alpha, random_state=0),
                            da.from_array(X[order], chunks=(chunk, D)), calibration_rows=5_000)
            cal = scorer.calibration_scores_
            assert cal.shape == (5_000,) and scorer.n_samples_fit_ == n
            if reference is None:
                reference = cal
            else:  # the same rows, scored by models equal up to the moments' rounding
                np.testing.assert_allclose(cal, reference, rtol=1e-9, atol=1e-9)
            rate = float(np.mean(scorer.predict(fresh) == -1))
            assert 0.04 <= rate <= 0.06, (name, chunk, rate)


def test_held_out_rows_depend_on_the_row_index_only():
    n, k = 10_007, 2_000
    rows = gd._calibration_rows(GaussianScorer(random_state=5), n, k)
    whole = rows.mask(0, n)
    assert whole.sum() == k                                   # exactly k, not about k
    assert np.array_equal(np.sort(rows.permute(np.arange(n))), np.arange(n))  # a permutation
    for chunk in (1, 333, 4_096):
        pieces = [rows.mask(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        assert np.array_equal(np.concatenate(pieces), whole)
    again = gd._calibration_rows(GaussianScorer(random_state=5), n, k).mask(0, n)
    other = gd._calibration_rows(GaussianScorer(random_state=6), n, k).mask(0, n)
    assert np.array_equal(again, whole) and not np.array_equal(other, whole)
    # spread evenly: each tenth of the file holds about a tenth of the held-out rows
    per_tenth = np.add.reduceat(whole, np.arange(0, n, n // 10)[:10])
    assert np.all(np.abs(per_tenth - k / 10) < 5 * np.sqrt(k / 10)), per_tenth
    # at most 1 in calibration_folds rows: a default of 20,000 on 1,000 rows holds out 200
    assert gd._calibration_rows(GaussianScorer(), 1_000, 20_000).k == 200


def write_npy(path, n, d, chunk):
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(3)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        mm[start:stop] = rng.normal(size=(stop - start, d)) + 1.0
    mm.flush()
    del mm


def test_npy_file_read_chunk_by_chunk(monkeypatch, tmp_path):
    n, d, chunk = 50_000, 16, 4_096
    path = tmp_path / "x.npy"
    write_npy(path, n, d, chunk)
    reads = []
    fromfile = np.fromfile

    def counting(*args, **kwargs):
        out = fromfile(*args, **kwargs)
        reads.append(out.size)
        return out

    monkeypatch.setattr(np, "fromfile", counting)
    with dask.config.set(scheduler="synchronous"):
        scorer = gd.fit(NormShellScorer(calibration="shell"), gd.from_npy(path, chunk))
        rows = np.load(path, mmap_mode="r")[1000:]  # a memmap, read from its file
        sliced = gd.fit(NormShellScorer(calibration="shell"), gd.as_dask_array(rows, chunk))
    assert max(reads) <= chunk * d and sum(reads) == n * d + (n - 1000) * d
    X = np.load(path)
    assert_same_model(scorer, NormShellScorer(calibration="shell").fit(X), 1e-6)
    assert_same_model(sliced, NormShellScorer(calibration="shell").fit(X[1000:]), 1e-6)


def _peak_rss_reset():
    from pathlib import Path
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss():
    from pathlib import Path
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def test_memmap_larger_than_chunks_never_loads_whole(client, tmp_path):
    n, d, chunk = 400_000, 32, 8_192  # a 51 MB file, 1 MB chunks
    path = tmp_path / "big.npy"
    write_npy(path, n, d, 50_000)
    mm = np.load(path, mmap_mode="r")
    try:
        client.run(_peak_rss_reset)
    except OSError:
        pytest.skip("cannot reset the peak RSS here (/proc/self/clear_refs)")
    before = client.run(_peak_rss)
    scorer = gd.fit(GaussianScorer(calibration="f"), gd.as_dask_array(mm, chunk_rows=chunk))
    total = float(gd.score_samples(scorer, gd.as_dask_array(mm, chunk_rows=chunk)).sum().compute())
    after = client.run(_peak_rss)
    file_bytes = n * d * 4
    for worker, peak in after.items():
        assert peak - before[worker] < file_bytes / 3, (worker, peak - before[worker])
    assert np.isfinite(total) and scorer.n_samples_fit_ == n


def test_zarr_store(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    X, _ = data(np.float32)
    store = zarr.open(str(tmp_path / "x.zarr"), mode="w", shape=X.shape, chunks=(CHUNK, D),
                      dtype="f4")
    store[:] = X
    ours = gd.fit(GaussianScorer(calibration="f"), da.from_zarr(str(tmp_path / "x.zarr")))
    assert_same_model(ours, GaussianScorer(calibration="f").fit(X), 1e-6)


def test_pin_blas_threads(client):
    gd.pin_blas_threads(client, 1)

    def threads():
        from threadpoolctl import threadpool_info
        return max((p["num_threads"] for p in threadpool_info()), default=1)

    assert set(client.run(threads).values()) == {1}


def test_errors_are_clear(client):
    X, _ = data(n=2_000)
    Xd = da.from_array(X, chunks=(500, D))
    with pytest.raises(ValueError, match="k-means"):
        gd.fit(GaussianScorer(n_clusters=3), Xd)
    with pytest.raises(ValueError, match="cv\\+.*Fit in memory.*calibration='conformal'"):
        gd.fit(GaussianScorer(calibration="cv+"), Xd)
    one_chunk = gd.fit(GaussianScorer(random_state=0), da.from_array(X, chunks=(2_000, D)))
    assert one_chunk.calibration_scores_.shape == (400,)  # one chunk is fine: rows held out
    with pytest.raises(ValueError, match="too few to hold out"):
        gd.fit(GaussianScorer(calibration="conformal"), da.from_array(X[:4], chunks=(2, D)))
    with pytest.raises(ValueError, match="calibration_rows must be a positive integer"):
        gd.fit(GaussianScorer(), Xd, calibration_rows=0)
    # 10 rows, 9 classes: the 2 held-out rows share a class, the other 8 are one per class
    held = np.flatnonzero(gd._calibration_rows(GaussianScorer(random_state=0), 10, 2000)
                          .mask(0, 10))
    labels = np.arange(10)
    labels[held[1]] = labels[held[0]]
    with pytest.raises(ValueError, match="held-out rows, and that fit fails"):
        gd.fit(GaussianScorer("ledoit_wolf", calibration="conformal", random_state=0),
               Xd[:10], labels)
    bad = X.copy()
    bad[1234, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gd.fit(GaussianScorer(calibration="f"), da.from_array(bad, chunks=(500, D)))
    with pytest.raises(ValueError, match="features"):
        gd.score_samples(GaussianScorer().fit(X), Xd[:, :5])
    with pytest.raises(TypeError):
        gd.fit(GaussianScorer(), [[1.0, 2.0]])
    scorer = GaussianScorer(calibration="f").fit(X)
    with pytest.raises(ValueError):  # a failed fit keeps the previous state
        gd.fit(scorer, da.from_array(bad, chunks=(500, D)))
    assert scorer.n_samples_fit_ == 2_000


def test_auto_stays_conformal_on_dask_where_memory_picks_cvplus(client):
    X, _ = data(n=1_000)                      # d / n = 0.024
    assert GaussianScorer(random_state=0).fit(X).calibration_ == "cv+"
    scorer = gd.fit(GaussianScorer(random_state=0), da.from_array(X, chunks=(250, D)),
                    calibration_rows=250)
    assert scorer.calibration_ == "conformal" and not hasattr(scorer, "fold_states_")
    assert np.isfinite(scorer.offset_)


@pytest.mark.parametrize("space", ["l2", "center-l2"])
@pytest.mark.parametrize("make", [lambda s: GaussianScorer(normalize=s, calibration="f"),
                                  lambda s: GaussianScorer(normalize=s, random_state=0),
                                  lambda s: KNNScorer(n_neighbors=10, normalize=s)])
def test_normalize_fit_and_scores_equal_in_memory(client, make, space):
    """The feature space on dask: the same model (the centre of "center-l2" from one
    pass) and the same scores as in memory, labelled or not."""
    X, y = data()
    Xd = da.from_array(X, chunks=(CHUNK, D))
    labelled = isinstance(make(space), GaussianScorer)
    ours = gd.fit(make(space), Xd, y if labelled else None)
    ref = make(space).fit(X, y if labelled else None)
    tol = 1e-8 if labelled else 1e-6  # dask's KNN gathers its bank as float32
    if space == "center-l2":
        np.testing.assert_allclose(ours.normalize_mean_, ref.normalize_mean_, rtol=tol / 100)
    Xt, _ = data(n=3_000, seed=1)
    np.testing.assert_allclose(gd.score_samples(ours, da.from_array(Xt, chunks=(700, D))).compute(),
                               ref.score_samples(Xt), rtol=tol, atol=tol)
    if ref.calibration_ == "f":
        assert ours.offset_ == pytest.approx(ref.offset_, rel=1e-10)
    else:  # held-out rows on dask, folds in memory: each near alpha on fresh rows
        fresh, _ = data(n=20_000, seed=2)
        assert 0.035 <= np.mean(gd.predict(ours, da.from_array(fresh, chunks=(5_000, D))).compute() == -1) <= 0.065


def test_norm_shell_refuses_a_space_on_dask(client):
    with pytest.raises(ValueError, match="nothing is left to score"):
        gd.fit(NormShellScorer(normalize="l2"), da.from_array(data()[0], chunks=(CHUNK, D)))
