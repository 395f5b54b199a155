"""Speed benchmark of gaussood against numpy, scikit-learn and pytorch-ood.

What it measures, in one run and on the same features:

* fit on ``n_fit`` (50,000) x 512 float32 in-distribution rows (10 labelled
  classes) and scoring of ``n_score`` (200,000) x 512 float32 test rows (half
  in-distribution, half OOD);
* Mahalanobis scoring: a plain numpy reference (Ledoit-Wolf covariance,
  Cholesky factor, score = row-wise squared norm of the float32 product
  (X - mu) @ L^-T; the near-BLAS limit), scikit-learn ``EmpiricalCovariance`` /
  ``LedoitWolf`` (``fit`` and ``mahalanobis``), pytorch-ood ``Mahalanobis``
  (one class, and class-conditional on the 10 labels) and gaussood
  ``GaussianScorer`` (one class, and ``fit(X, y)`` class-conditional);
* k-NN scoring (k = 50, cosine on L2-normalised features): scikit-learn
  ``NearestNeighbors`` (brute, cosine), pytorch-ood ``KNN`` (scikit-learn,
  euclidean on normalised features), gaussood ``KNNScorer`` with the exact
  flat faiss index and with the IVF index (recall@50 of the IVF neighbours
  against the exact ones, AUROC of exact vs IVF scores; a small n_lists/n_probe
  sweep picks the fastest setting with recall@50 >= 0.95 and an AUROC gap
  <= 0.002, and gaussood's defaults are reported too);
* fits on a busy machine: ``GaussianScorer``, ``NormShellScorer`` and
  ``PValueCombination`` (their defaults) on ``n_busy`` (40,000) x ``busy_features``
  (256) rows, timed on a quiet machine and again while ``busy_processes``
  background processes (one per core) keep every core busy with a one-thread
  BLAS loop (each stops itself after ``busy_max_s`` and is killed after the
  step). Targets: busy/quiet fit time <= 3x for ``GaussianScorer``;
  ``PValueCombination`` fit <= 2x the sum of its components' fits;
* peak extra memory (tracemalloc, which sees numpy's allocations) while
  ``GaussianScorer.score_samples`` scores ``n_memory`` (2,000,000) x 512 float32
  rows (4 GB): it should be O(chunk_size x d), not O(n x d).

The features are SYNTHETIC (no real embeddings exist yet): a 10-component
Gaussian mixture in 512-d with a decaying covariance spectrum
(eigenvalues 1 / (1 + i)^0.8) in a random rotation; OOD rows come from a
shifted, slightly rescaled copy of the mixture, so AUROC lies strictly between
0.5 and 1. Everything is seeded (``CONFIG["seed"]``).

Timing: ``time.perf_counter``; every method is warmed up once on a small slice,
fast methods are repeated (interleaved, so slow drift of a shared machine hits
all of them alike) and the median is reported (the best time is kept in the
JSON too). Slow baselines are timed on a random subset of the test rows
(``n_score_slow``) and reported per row. Ratios are throughput ratios
(reference us/row divided by method us/row) except the fit target, which is a
time ratio. Targets are reported as PASS / FAIL; failures are not hidden.

Fairness details: the scikit-learn / pytorch-ood k-NN baselines run before
faiss is loaded into the process (loading faiss slows scikit-learn's brute
k-NN on this kind of machine), and gaussood is the first to import faiss (it
may set ``OPENBLAS_CORETYPE`` for faiss's bundled OpenBLAS first, as it would
in a user's program). The CPU time that other processes take while each step
runs is recorded (``contention`` in the JSON); numbers from a busy machine
are not comparable.

Run (``make speed`` runs ``python benchmarks/speed.py``)::

    PYTHONPATH=. python benchmarks/speed.py           # full run, ~10 min on 2 cores
    PYTHONPATH=. python benchmarks/speed.py --quick   # smoke run, < 1 min
    PYTHONPATH=. python benchmarks/speed.py --busy-only   # only the busy-machine fits

The full run writes ``benchmarks/results/speed.json`` and ``speed.md``; the
quick run writes ``speed_quick.json`` / ``speed_quick.md`` and never
overwrites the full result. The Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
CONFIG = {
    "seed": 20260101,
    "n_features": 512,
    "n_classes": 10,
    "n_fit": 50_000,              # fit rows (in-distribution, labelled)
    "n_score": 200_000,           # scored rows: half in-distribution, half OOD
    "n_score_slow": 20_000,       # subset for slow baselines (sklearn, pytorch-ood k-NN)
    "n_recall": 10_000,           # queries for recall@k of IVF vs exact
    "n_sweep": 5_000,             # queries for the IVF n_lists / n_probe sweep
    "n_memory": 2_000_000,        # rows for the memory run (0: skip)
    "k": 50,
    "chunk_size": 4096,           # gaussood default; the numpy reference uses the same
    "torch_batch": 4096,          # batch size given to pytorch-ood predict_features
    "threads": 2,
    "repeats_fast": 5,            # repeats of fast scoring / fit timings (median)
    "repeats_slow": 1,            # repeats of the slow baselines and exact k-NN
    "repeats_ivf": 3,             # repeats of IVF scoring on all n_score rows
    # synthetic data
    "spectrum_decay": 0.8,        # eigenvalue i of the covariance: 1 / (1 + i)^decay
    "center_norm": 4.0,           # norm of the global mean (embeddings are not centred)
    "class_spread": 0.5,          # class means ~ center + N(0, spread^2 Sigma)
    "ood_shift": 0.25,            # OOD mean shift ~ N(0, shift^2 Sigma), one fixed vector
    "ood_scale": 1.04,            # OOD rows: rescaled around their class means
    # IVF sweep (n_lists None = gaussood's default round(sqrt(n_indexed)))
    "ivf_n_lists": [None, 128, 512, 1024],
    "ivf_n_probe": [4, 8, 12, 16, 24, 32, 48, 64],
    "ivf_min_recall": 0.95,
    # targets
    "target_gauss_vs_numpy": 0.8,     # throughput ratio, >=
    "target_class_vs_torch": 5.0,     # throughput ratio, >=
    "target_knn_vs_sklearn": 2.0,     # throughput ratio, >=
    "target_ivf_vs_sklearn": 10.0,    # throughput ratio, >=
    "target_ivf_auroc_gap": 0.002,    # |AUROC_ivf - AUROC_exact| <=
    "target_fit_vs_ledoitwolf": 2.0,  # time ratio, <=
    # fits on a busy machine
    "n_busy": 40_000,                 # rows of the busy-machine fits
    "busy_features": 256,             # their columns (the first of the synthetic features)
    "busy_processes": None,           # background processes (None: one per core)
    "busy_max_s": 600,                # each background process stops itself after this
    "repeats_busy": 3,
    "target_busy_gaussian": 3.0,      # busy / quiet fit time, <=
    "target_combination_vs_sum": 2.0,  # PValueCombination fit / sum of components, <=
}

QUICK = {
    "n_fit": 6_000,
    "n_score": 20_000,
    "n_score_slow": 2_000,
    "n_recall": 2_000,
    "n_sweep": 2_000,
    "n_memory": 0,
    "repeats_fast": 2,
    "repeats_ivf": 2,
    "ivf_n_lists": [None],
    "ivf_n_probe": [4, 8, 16],
    "n_busy": 4_000,
    "busy_features": 64,
    "busy_max_s": 120,
    "repeats_busy": 1,
}

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------
# Data: a seeded, anisotropic 10-class Gaussian mixture and its OOD copy
# ---------------------------------------------------------------------------
class SyntheticEmbeddings:
    """Mixture of ``n_classes`` Gaussians with a shared, rotated covariance.

    Sigma = Q diag(lambda) Q^T with lambda_i = 1 / (1 + i)^decay and Q a random
    rotation; class means are center + N(0, spread^2 Sigma). OOD rows are
    center + shift + scale * (class offset + noise): the same mixture, moved
    and rescaled.
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg
        d, k = cfg["n_features"], cfg["n_classes"]
        rng = np.random.default_rng(cfg["seed"])
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q *= np.sign(np.diag(r))
        self.eigenvalues = 1.0 / (1.0 + np.arange(d)) ** cfg["spectrum_decay"]
        # z @ factor has covariance Q diag(lambda) Q^T for z ~ N(0, I)
        self.factor = (np.sqrt(self.eigenvalues)[:, None] * q.T).astype(np.float32)
        center = rng.standard_normal(d)
        center *= cfg["center_norm"] / np.linalg.norm(center)
        offsets = cfg["class_spread"] * (rng.standard_normal((k, d)) @ self.factor)
        self.means = (center + offsets).astype(np.float32)
        shift = cfg["ood_shift"] * (rng.standard_normal(d) @ self.factor)
        scale = cfg["ood_scale"]
        self.ood_means = (center + shift + scale * offsets).astype(np.float32)
        self.ood_scale = np.float32(scale)

    def sample(self, rng, n: int, *, ood: bool = False, out=None, chunk: int = 65_536):
        """(X float32 (n, d), labels (n,)); written into ``out`` if given."""
        d, k = self.cfg["n_features"], self.cfg["n_classes"]
        X = np.empty((n, d), dtype=np.float32) if out is None else out
        labels = rng.integers(k, size=n)
        means = self.ood_means if ood else self.means
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            z = rng.standard_normal((stop - start, d), dtype=np.float32)
            block = z @ self.factor
            if ood:
                block *= self.ood_scale
            block += means[labels[start:stop]]
            X[start:stop] = block
        return X, labels


def make_data(cfg: dict) -> dict:
    gen = SyntheticEmbeddings(cfg)
    rng = np.random.default_rng(cfg["seed"] + 1)
    X_fit, y_fit = gen.sample(rng, cfg["n_fit"])
    n_id = cfg["n_score"] // 2
    X_test = np.empty((cfg["n_score"], cfg["n_features"]), dtype=np.float32)
    gen.sample(rng, n_id, out=X_test[:n_id])
    gen.sample(rng, cfg["n_score"] - n_id, ood=True, out=X_test[n_id:])
    is_id = np.zeros(cfg["n_score"], dtype=bool)
    is_id[:n_id] = True
    sub = np.sort(rng.choice(cfg["n_score"], size=cfg["n_score_slow"], replace=False))
    rec = np.sort(rng.choice(cfg["n_score"], size=cfg["n_recall"], replace=False))
    sweep = np.sort(rng.choice(cfg["n_score"], size=cfg["n_sweep"], replace=False))
    return {"gen": gen, "X_fit": X_fit, "y_fit": y_fit, "X_test": X_test, "is_id": is_id,
            "sub": sub, "X_sub": np.ascontiguousarray(X_test[sub]),
            "rec": rec, "sweep": sweep}


# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------
class NumpyReference:
    """Ledoit-Wolf covariance, Cholesky factor L, score = ||(x - mu) L^-T||^2.

    The scoring is a float32 matrix product and a row-wise squared norm, in
    chunks of ``chunk_size`` rows: what BLAS alone would cost.
    """

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size

    def fit(self, X):
        from scipy.linalg import cholesky, solve_triangular
        from sklearn.covariance import ledoit_wolf

        cov, self.shrinkage_ = ledoit_wolf(X)
        mu = X.mean(axis=0, dtype=np.float64)
        L = cholesky(np.asarray(cov, dtype=np.float64), lower=True)
        L_inv = solve_triangular(L, np.eye(L.shape[0]), lower=True)
        self.mu = mu.astype(np.float32)
        self.L_inv_T = np.ascontiguousarray(L_inv.T, dtype=np.float32)
        return self

    def mahalanobis(self, X):
        out = np.empty(X.shape[0], dtype=np.float32)
        step = self.chunk_size
        for start in range(0, X.shape[0], step):
            Z = (X[start:start + step] - self.mu) @ self.L_inv_T
            out[start:start + step] = np.einsum("ij,ij->i", Z, Z)
        return out


def torch_batched(fn, X, batch: int):
    """Call a pytorch-ood ``predict_features`` in batches; numpy float64 out."""
    import torch

    out = np.empty(X.shape[0], dtype=np.float64)
    with torch.no_grad():
        for start in range(0, X.shape[0], batch):
            out[start:start + batch] = fn(torch.from_numpy(X[start:start + batch])).numpy()
    return out


def kth_score(sims: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """KNNScorer's score from a faiss inner-product search: cos(z, z_(k)) - 1."""
    kth = np.where(ids[:, -1] >= 0, sims[:, -1], -1.0)
    return np.clip(kth.astype(np.float64), -1.0, 1.0) - 1.0


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    k = exact_ids.shape[1]
    hits = [np.intersect1d(a[a >= 0], e, assume_unique=True).size
            for a, e in zip(approx_ids, exact_ids)]
    return float(np.sum(hits)) / (k * exact_ids.shape[0])


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def _stats(times: list, n_rows: int | None = None) -> dict:
    times = [float(t) for t in times]
    out = {"median_s": float(np.median(times)), "best_s": min(times), "times_s": times,
           "repeats": len(times)}
    if n_rows:
        out["rows"] = int(n_rows)
        out["us_per_row"] = out["median_s"] / n_rows * 1e6
        out["best_us_per_row"] = out["best_s"] / n_rows * 1e6
        out["rows_per_s"] = n_rows / out["median_s"]
    return out


def time_interleaved(jobs: dict, repeats: int) -> tuple[dict, dict]:
    """Time several jobs, round-robin, ``repeats`` times each.

    ``jobs[name] = (fn, warmup_fn_or_None, n_rows_or_None)``; returns
    (timing stats, last result) per name.
    """
    for name, (fn, warmup, _) in jobs.items():
        if warmup is not None:
            warmup()
    times = {name: [] for name in jobs}
    results = {}
    for _ in range(repeats):
        for name, (fn, _, _) in jobs.items():
            gc.collect()
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: _stats(times[name], jobs[name][2]) for name in jobs}, results


def time_one(fn, warmup=None, n_rows=None, repeats=1):
    """``time_interleaved`` for a single job: (stats, result)."""
    stats, results = time_interleaved({"job": (fn, warmup, n_rows)}, repeats)
    return stats["job"], results["job"]


class Contention:
    """CPU time used by *other* processes: /proc/stat busy time minus our own.

    The benchmark shares the machine with whatever else runs; this measures
    how much of the CPUs something else took during each step.
    """

    def __init__(self):
        self.steps: list = []
        self.t0 = self.last = self._snapshot()

    @staticmethod
    def _snapshot():
        busy = None
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    @staticmethod
    def _share(a, b):
        if a[1] is None:
            return None
        wall = max(b[0] - a[0], 1e-9)
        other = max((b[1] - a[1]) - (b[2] - a[2]), 0.0)
        return {"wall_s": wall, "other_cpu_s": other,
                "other_share_of_all_cpus": other / (wall * (os.cpu_count() or 1))}

    def step(self, name: str):
        now = self._snapshot()
        share = self._share(self.last, now)
        if share is not None:
            self.steps.append({"step": name, **share})
        self.last = now
        return share

    def total(self):
        return self._share(self.t0, self._snapshot())


CONTENTION = Contention()
_STEP = ["start"]


def log(msg: str) -> None:
    share = CONTENTION.step(_STEP[0])
    _STEP[0] = msg
    extra = ("" if share is None or share["wall_s"] < 2.0 else
             f"  (other processes took {100 * share['other_share_of_all_cpus']:.0f}% "
             "of the CPUs in the previous step)")
    print(f"[{time.strftime('%H:%M:%S')}] {msg}{extra}", flush=True)


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------
def let_gaussood_import_faiss() -> None:
    """Make gaussood, not this script, the first to import faiss.

    gaussood may prepare the import (it can tell faiss's bundled OpenBLAS the
    CPU type, which that OpenBLAS reads once, when it loads); a script that
    imported faiss first would measure something no gaussood user gets.
    """
    if "faiss" in sys.modules:
        return
    import warnings

    from gaussood import KNNScorer

    with warnings.catch_warnings():  # 16 rows: too few to calibrate, and that is fine
        warnings.simplefilter("ignore")
        KNNScorer(n_neighbors=2).fit(np.random.default_rng(0).standard_normal((16, 4)))


def versions() -> dict:
    import faiss
    import pytorch_ood
    import scipy
    import sklearn
    import torch

    import gaussood

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "faiss": faiss.__version__, "torch": torch.__version__,
            "pytorch-ood": getattr(pytorch_ood, "__version__", "unknown"),
            "gaussood": gaussood.__version__}


def source_state() -> dict:
    """Git commit of the checkout and a hash of uncommitted changes to gaussood/."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    diff = git("diff", "HEAD", "--", "gaussood")
    return {"git_commit": git("rev-parse", "HEAD").strip() or None,
            "gaussood_uncommitted_changes": bool(diff),
            "gaussood_diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff else None}


def hardware() -> dict:
    import faiss
    import torch
    from threadpoolctl import threadpool_info

    cpu = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "stepping") and key not in cpu:
                    cpu[key] = value.strip()
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    pools = [{key: (os.path.basename(v) if key == "filepath" else v) for key, v in info.items()}
             for info in threadpool_info()]
    notes = []
    for info in pools:
        if info.get("architecture") in ("Prescott", "Generic", "Core2", "Nehalem"):
            notes.append(
                f"{info['filepath']} (OpenBLAS {info['version']}) detected this CPU as "
                f"'{info['architecture']}': it does not recognise it and falls back to old "
                "kernels without AVX (OPENBLAS_CORETYPE overrides the detection).")
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": cpu.get("model name", platform.processor()),
            "cpu_family_model_stepping": [cpu.get("cpu family"), cpu.get("model"),
                                          cpu.get("stepping")],
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": mem_gb, "torch_threads": torch.get_num_threads(),
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                               "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
                    if k in os.environ},
            "threadpoolctl": pools, "notes": notes}


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------
def run(cfg: dict, quick: bool) -> dict:
    import torch
    from pytorch_ood.detector import KNN as TorchKNN
    from pytorch_ood.detector import Mahalanobis as TorchMahalanobis
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf
    from sklearn.neighbors import NearestNeighbors

    from gaussood import GaussianScorer, KNNScorer
    from gaussood.knn import l2_normalise
    from gaussood.metrics import auroc

    torch.set_num_threads(cfg["threads"])
    rf, rs = cfg["repeats_fast"], cfg["repeats_slow"]
    k, seed, chunk = cfg["k"], cfg["seed"], cfg["chunk_size"]
    res: dict = {"timings": {}, "auroc": {}, "checks": {}}
    T, A = res["timings"], res["auroc"]

    # ------------------------------------------------------------------ data
    log("generating data")
    t0 = time.perf_counter()
    data = make_data(cfg)
    res["data_generation_s"] = time.perf_counter() - t0
    X, y, Xt, is_id = data["X_fit"], data["y_fit"], data["X_test"], data["is_id"]
    Xs, is_id_sub = data["X_sub"], is_id[data["sub"]]
    n_t, n_s = Xt.shape[0], Xs.shape[0]
    warm_fit, warm_rows = X[:2000], Xt[:1000]
    zeros = torch.zeros(X.shape[0], dtype=torch.long)
    y_t = torch.from_numpy(y.astype(np.int64))

    def auc(scores, mask):  # every score here: higher = more in-distribution
        return float(auroc(scores[mask], scores[~mask]))

    # ------------------------------------------------------------ Gaussian fit
    log("Gaussian fits")
    fits = {
        "numpy_reference": lambda: NumpyReference(chunk).fit(X),
        "sklearn_empirical": lambda: EmpiricalCovariance().fit(X),
        "sklearn_ledoitwolf": lambda: LedoitWolf().fit(X),
        "torch_ood_mahalanobis": lambda: TorchMahalanobis(None).fit_features(torch.from_numpy(X), zeros),
        "torch_ood_mahalanobis_class": lambda: TorchMahalanobis(None).fit_features(torch.from_numpy(X), y_t),
        "gaussood_gaussian": lambda: GaussianScorer(random_state=seed, chunk_size=chunk).fit(X),
        "gaussood_gaussian_class": lambda: GaussianScorer(random_state=seed, chunk_size=chunk).fit(X, y),
        # the same fit without calibration scores (parametric chi2 threshold): the core cost
        "gaussood_gaussian_chi2": lambda: GaussianScorer(calibration="chi2", random_state=seed,
                                                         chunk_size=chunk).fit(X),
    }
    GaussianScorer(random_state=seed).fit(warm_fit)   # warm-up: imports, BLAS threads
    LedoitWolf().fit(warm_fit)
    stats, models = time_interleaved({name: (fn, None, None) for name, fn in fits.items()}, rf)
    for name, st in stats.items():
        T[name] = {"fit": st}

    ref, gs, gsc = models["numpy_reference"], models["gaussood_gaussian"], models["gaussood_gaussian_class"]
    res["checks"]["gaussood_calibration"] = gs.calibration_
    res["checks"]["gaussood_class_calibration"] = gsc.calibration_
    res["checks"]["gaussood_shrinkage"] = gs.shrinkage_
    res["checks"]["sklearn_ledoitwolf_shrinkage"] = float(models["sklearn_ledoitwolf"].shrinkage_)

    # -------------------------------------------------------- Gaussian scoring
    log("Gaussian scoring (full test set)")
    tm, tmc = models["torch_ood_mahalanobis"], models["torch_ood_mahalanobis_class"]
    bt = cfg["torch_batch"]
    jobs = {
        "numpy_reference": (lambda: ref.mahalanobis(Xt), lambda: ref.mahalanobis(warm_rows), n_t),
        "gaussood_gaussian": (lambda: gs.score_samples(Xt), lambda: gs.score_samples(warm_rows), n_t),
        "gaussood_gaussian_class": (lambda: gsc.score_samples(Xt), lambda: gsc.score_samples(warm_rows), n_t),
        "torch_ood_mahalanobis": (lambda: torch_batched(tm.predict_features, Xt, bt),
                                  lambda: torch_batched(tm.predict_features, warm_rows, bt), n_t),
        "torch_ood_mahalanobis_class": (lambda: torch_batched(tmc.predict_features, Xt, bt),
                                        lambda: torch_batched(tmc.predict_features, warm_rows, bt), n_t),
    }
    stats, scores = time_interleaved(jobs, rf)
    for name, st in stats.items():
        T[name]["score"] = st
    A["numpy_reference"] = auc(-scores["numpy_reference"].astype(np.float64), is_id)
    A["gaussood_gaussian"] = auc(scores["gaussood_gaussian"], is_id)
    A["gaussood_gaussian_class"] = auc(scores["gaussood_gaussian_class"], is_id)
    A["torch_ood_mahalanobis"] = auc(-scores["torch_ood_mahalanobis"], is_id)
    A["torch_ood_mahalanobis_class"] = auc(-scores["torch_ood_mahalanobis_class"], is_id)
    d_ref = scores["numpy_reference"].astype(np.float64)
    res["checks"]["gaussood_vs_numpy_max_rel_diff_d2"] = float(
        np.max(np.abs(-scores["gaussood_gaussian"] - d_ref) / d_ref))
    del scores

    log(f"scikit-learn mahalanobis ({n_s} rows)")
    jobs = {
        "sklearn_empirical": (lambda: models["sklearn_empirical"].mahalanobis(Xs),
                              lambda: models["sklearn_empirical"].mahalanobis(warm_rows[:200]), n_s),
        "sklearn_ledoitwolf": (lambda: models["sklearn_ledoitwolf"].mahalanobis(Xs),
                               lambda: models["sklearn_ledoitwolf"].mahalanobis(warm_rows[:200]), n_s),
    }
    stats, scores = time_interleaved(jobs, rs)
    for name, st in stats.items():
        T[name]["score"] = st
        A[name] = auc(-scores[name], is_id_sub)
    del models, scores

    # ---------------------------------------------------------------- k-NN
    # The baselines run before faiss is loaded into this process: merely
    # importing faiss slows scikit-learn's brute euclidean k-NN here (about
    # 1.7x in a separate test), which would flatter gaussood.
    assert "faiss" not in sys.modules
    db = l2_normalise(X)            # what KNNScorer indexes (checked below)
    Xs_norm = l2_normalise(Xs)
    log(f"k-NN: scikit-learn and pytorch-ood on {db.shape[0]} rows ({n_s} queries), "
        "before faiss is loaded")
    fits = {
        "sklearn_knn_cosine": lambda: NearestNeighbors(n_neighbors=k, algorithm="brute",
                                                       metric="cosine").fit(db),
        "torch_ood_knn": lambda: TorchKNN(None, k=k).fit_features(
            torch.from_numpy(X), torch.zeros(X.shape[0], dtype=torch.long)),
    }
    stats, models = time_interleaved({n: (f, None, None) for n, f in fits.items()}, rs)
    for name, st in stats.items():
        T[name] = {"fit": st}
    nn_sk, knn_torch = models["sklearn_knn_cosine"], models["torch_ood_knn"]
    jobs = {
        "sklearn_knn_cosine": (lambda: -nn_sk.kneighbors(Xs_norm, n_neighbors=k)[0][:, -1],
                               lambda: nn_sk.kneighbors(Xs_norm[:200], n_neighbors=k), n_s),
        "torch_ood_knn": (lambda: -knn_torch.predict_features(torch.from_numpy(Xs)).numpy(),
                          lambda: knn_torch.predict_features(torch.from_numpy(Xs[:200])), n_s),
    }
    stats, scores = time_interleaved(jobs, rs)
    for name, st in stats.items():
        T[name]["score"] = st
        A[name] = auc(scores[name], is_id_sub)
    res["checks"]["faiss_loaded_during_knn_baselines"] = "faiss" in sys.modules
    del models, scores

    log("k-NN: gaussood flat fit (gaussood imports faiss)")
    let_gaussood_import_faiss()
    import faiss

    faiss.omp_set_num_threads(cfg["threads"])
    mk_flat = lambda: KNNScorer(n_neighbors=k, random_state=seed, chunk_size=chunk).fit(X)  # noqa: E731
    KNNScorer(n_neighbors=k, random_state=seed).fit(warm_fit)
    st, knn_flat = time_one(mk_flat, repeats=rs)
    T["gaussood_knn_flat"] = {"fit": st}
    res["checks"]["knn_indexed_rows"] = int(knn_flat.embeddings_.shape[0])
    res["checks"]["knn_indexes_same_rows_as_baselines"] = bool(
        np.array_equal(knn_flat.embeddings_, db))
    db = knn_flat.embeddings_
    res["checks"]["knn_calibration"] = getattr(knn_flat, "calibration_", None)
    # fit = index build + calibration; time the index build alone as well
    T["gaussood_knn_flat"]["index_build"] = time_one(lambda: knn_flat._build_index(db), repeats=rs)[0]
    st, sc = time_one(lambda: knn_flat.score_samples(Xs), lambda: knn_flat.score_samples(Xs[:200]),
                      n_s, rs)
    T["gaussood_knn_flat_subset"] = {"score": st}
    A["gaussood_knn_flat_subset"] = auc(sc, is_id_sub)

    log(f"k-NN: gaussood flat on all {n_t} rows")
    st, exact_scores = time_one(lambda: knn_flat.score_samples(Xt),
                                lambda: knn_flat.score_samples(warm_rows), n_t, rs)
    T["gaussood_knn_flat"]["score"] = st
    A["gaussood_knn_flat"] = auc(exact_scores, is_id)

    # exact neighbours of the recall and sweep queries (normalised, as the scorer does)
    q_rec = l2_normalise(Xt[data["rec"]])
    q_sweep = l2_normalise(Xt[data["sweep"]])
    exact_rec = knn_flat._index.search(q_rec, k)[1]
    sims, exact_sweep = knn_flat._index.search(q_sweep, k)
    sweep_id = is_id[data["sweep"]]
    auc_sweep_exact = auc(kth_score(sims, exact_sweep), sweep_id)

    # The sweep builds indexes with the scorer's own _build_index (same faiss
    # settings and seed as fit) on the same rows, without fit's calibration.
    log("k-NN: IVF sweep")
    sweep = []
    for n_lists in cfg["ivf_n_lists"]:
        index = KNNScorer(n_neighbors=k, index="ivf", n_lists=n_lists, n_probe=1,
                          random_state=seed)._build_index(db)
        ivf = faiss.extract_index_ivf(index)
        for n_probe in cfg["ivf_n_probe"]:
            if n_probe > ivf.nlist:
                continue
            ivf.nprobe = n_probe
            index.search(q_sweep[:200], k)
            t0 = time.perf_counter()
            sims, ids = index.search(q_sweep, k)
            dt = time.perf_counter() - t0
            sweep.append({"n_lists": int(ivf.nlist), "n_lists_param": n_lists,
                          "n_probe": n_probe, "recall_at_k": recall_at_k(ids, exact_sweep),
                          "auroc_gap_vs_exact": abs(auc(kth_score(sims, ids), sweep_id)
                                                    - auc_sweep_exact),
                          "us_per_row": dt / q_sweep.shape[0] * 1e6})
            log(f"  n_lists={ivf.nlist:4d} n_probe={n_probe:3d} recall@{k}="
                f"{sweep[-1]['recall_at_k']:.4f} dAUROC={sweep[-1]['auroc_gap_vs_exact']:.4f} "
                f"{sweep[-1]['us_per_row']:.1f} us/row")
        del index, ivf
    res["ivf_sweep"] = {"queries": int(q_sweep.shape[0]), "indexed_rows": int(db.shape[0]),
                        "settings": sweep}
    good = [s for s in sweep if s["recall_at_k"] >= cfg["ivf_min_recall"]
            and s["auroc_gap_vs_exact"] <= cfg["target_ivf_auroc_gap"]]
    ok = [s for s in sweep if s["recall_at_k"] >= cfg["ivf_min_recall"]]
    if good:
        best, rule = min(good, key=lambda s: s["us_per_row"]), (
            f"fastest sweep setting with recall@{k} >= {cfg['ivf_min_recall']} and "
            f"|dAUROC| <= {cfg['target_ivf_auroc_gap']} on the sweep queries")
    elif ok:
        best, rule = min(ok, key=lambda s: s["us_per_row"]), (
            f"no setting met both targets; fastest with recall@{k} >= {cfg['ivf_min_recall']}")
    else:
        best, rule = max(sweep, key=lambda s: s["recall_at_k"]), (
            "no setting reached the recall target: highest recall")
    res["ivf_choice"] = {"n_lists": best["n_lists"], "n_probe": best["n_probe"], "rule": rule}

    for label, params in (("gaussood_knn_ivf", {"n_lists": best["n_lists"], "n_probe": best["n_probe"]}),
                          ("gaussood_knn_ivf_default", {})):
        log(f"k-NN: {label} {params}")
        mk = lambda: KNNScorer(n_neighbors=k, index="ivf", random_state=seed,  # noqa: E731
                               chunk_size=chunk, **params).fit(X)
        st, ivf_model = time_one(mk, repeats=rs)
        assert np.array_equal(ivf_model.embeddings_, db)
        T[label] = {"fit": st}
        T[label]["index_build"] = time_one(lambda: ivf_model._build_index(db), repeats=rs)[0]
        st, sc = time_one(lambda: ivf_model.score_samples(Xt),
                          lambda: ivf_model.score_samples(warm_rows), n_t, cfg["repeats_ivf"])
        T[label]["score"] = st
        A[label] = auc(sc, is_id)
        inner = faiss.extract_index_ivf(ivf_model._index)
        res[label] = {"n_lists": int(inner.nlist), "n_probe": int(inner.nprobe),
                      "recall_at_k": recall_at_k(ivf_model._index.search(q_rec, k)[1], exact_rec),
                      "recall_queries": int(q_rec.shape[0]),
                      "auroc_gap_vs_exact": abs(A[label] - A["gaussood_knn_flat"]),
                      "max_abs_score_diff_vs_exact": float(np.max(np.abs(sc - exact_scores)))}
        del ivf_model, sc
    del knn_flat, exact_scores

    # ------------------------------------------------------------- memory
    if cfg["n_memory"]:
        n_m = cfg["n_memory"]
        log(f"memory: generating {n_m} x {cfg['n_features']} float32")
        big = np.empty((n_m, cfg["n_features"]), dtype=np.float32)
        data["gen"].sample(np.random.default_rng(seed + 2), n_m, out=big)
        gs.score_samples(warm_rows)
        gc.collect()
        log("memory: scoring under tracemalloc")
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        out = gs.score_samples(big)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        extra = peak - base
        chunk_bytes = chunk * cfg["n_features"] * big.itemsize
        res["memory"] = {
            "rows": n_m, "input_mb": big.nbytes / 2**20, "output_mb": out.nbytes / 2**20,
            "peak_extra_mb": extra / 2**20,
            "peak_extra_minus_output_mb": (extra - out.nbytes) / 2**20,
            "chunk_mb": chunk_bytes / 2**20,
            "peak_extra_minus_output_in_chunks": (extra - out.nbytes) / chunk_bytes,
            "score_s_under_tracemalloc": dt, "us_per_row": dt / n_m * 1e6}
        del big, out
        gc.collect()
    res["busy_fits"] = busy_fits(cfg, np.ascontiguousarray(X[:cfg["n_busy"], :cfg["busy_features"]]))
    return res


def run_busy_only(cfg: dict) -> dict:
    """Only the busy-machine fits, on the same synthetic data."""
    log("generating data")
    X, _ = SyntheticEmbeddings(cfg).sample(np.random.default_rng(cfg["seed"]), cfg["n_busy"])
    return {"busy_fits": busy_fits(cfg, np.ascontiguousarray(X[:, :cfg["busy_features"]]))}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
LABELS = {
    "numpy_reference": "numpy reference (Ledoit-Wolf, Cholesky, float32 GEMM)",
    "sklearn_empirical": "scikit-learn EmpiricalCovariance.mahalanobis",
    "sklearn_ledoitwolf": "scikit-learn LedoitWolf.mahalanobis",
    "torch_ood_mahalanobis": "pytorch-ood Mahalanobis, one class",
    "torch_ood_mahalanobis_class": "pytorch-ood Mahalanobis, 10 classes",
    "gaussood_gaussian": "gaussood GaussianScorer, one class",
    "gaussood_gaussian_class": "gaussood GaussianScorer fit(X, y), 10 classes",
    "sklearn_knn_cosine": "scikit-learn NearestNeighbors (brute, cosine)",
    "torch_ood_knn": "pytorch-ood KNN (scikit-learn brute, euclidean)",
    "gaussood_knn_flat": "gaussood KNNScorer, exact (flat)",
    "gaussood_knn_flat_subset": "gaussood KNNScorer, exact (flat), subset",
    "gaussood_knn_ivf": "gaussood KNNScorer, IVF (tuned)",
    "gaussood_knn_ivf_default": "gaussood KNNScorer, IVF (defaults)",
}


BUSY_LOOP = """
import sys, time
import numpy as np
deadline = time.monotonic() + float(sys.argv[1])
a = np.random.default_rng(0).normal(size=(384, 384))
while time.monotonic() < deadline:
    np.linalg.eigh(a @ a.T)
"""


class BusyMachine:
    """Context manager: ``n`` background processes (default one per core) keep the
    cores busy with a one-thread BLAS loop; each stops itself after ``max_s`` seconds
    and is terminated (then killed) when the block ends."""

    def __init__(self, n: int | None, max_s: float):
        self.n = int(n or os.cpu_count() or 1)
        self.max_s = float(max_s)
        self.procs: list = []

    def __enter__(self):
        import subprocess

        from gaussood._threads import blas_thread_env

        env = {**os.environ, **blas_thread_env(1)}
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(self.max_s)],
                                       env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(self.n)]
        time.sleep(1.0)  # let them start and load numpy
        return self

    def __exit__(self, *exc):
        import subprocess

        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        return False


def busy_fits(cfg: dict, X: np.ndarray) -> dict:
    """Fit times of the default scorers, quiet and with every core busy."""
    from gaussood import GaussianScorer, NormShellScorer, PValueCombination

    seed = cfg["seed"]
    fits = {
        "gaussood_gaussian": lambda: GaussianScorer(random_state=seed).fit(X),
        "gaussood_norm_shell": lambda: NormShellScorer(random_state=seed).fit(X),
        "gaussood_combination": lambda: PValueCombination(random_state=seed).fit(X),
    }
    PValueCombination(random_state=seed).fit(X[:1000])  # warm-up
    out = {"rows": int(X.shape[0]), "features": int(X.shape[1]), "dtype": str(X.dtype)}
    log(f"busy machine: quiet fits on {X.shape[0]:,} x {X.shape[1]}")
    quiet = Contention()
    out["quiet"], _ = time_interleaved({n: (f, None, None) for n, f in fits.items()},
                                       cfg["repeats_busy"])
    out["quiet_contention"] = quiet.total()
    busy = BusyMachine(cfg["busy_processes"], cfg["busy_max_s"])
    log(f"busy machine: the same fits with {busy.n} busy background processes")
    with busy:
        loaded = Contention()
        out["busy"], _ = time_interleaved({n: (f, None, None) for n, f in fits.items()},
                                          cfg["repeats_busy"])
        out["busy_contention"] = loaded.total()
    out["busy_processes"] = busy.n
    for when in ("quiet", "busy"):
        t = {n: st["median_s"] for n, st in out[when].items()}
        out[f"{when}_combination_vs_sum"] = t["gaussood_combination"] / (
            t["gaussood_gaussian"] + t["gaussood_norm_shell"])
    out["busy_over_quiet"] = {n: out["busy"][n]["median_s"] / out["quiet"][n]["median_s"]
                              for n in fits}
    return out


def busy_targets(cfg: dict, res: dict) -> list:
    b = res["busy_fits"]
    r = b["busy_over_quiet"]["gaussood_gaussian"]
    out = [{"method": "gaussood_gaussian_busy_fit", "reference": "gaussood_gaussian_quiet_fit",
            "ratio": r, "target_value": cfg["target_busy_gaussian"],
            "target": f"busy / quiet fit time <= {cfg['target_busy_gaussian']:g}x",
            "pass": bool(r <= cfg["target_busy_gaussian"])}]
    for when in ("quiet", "busy"):
        r = b[f"{when}_combination_vs_sum"]
        out.append({"method": f"gaussood_combination_{when}_fit",
                    "reference": "sum of GaussianScorer and NormShellScorer fits",
                    "ratio": r, "target_value": cfg["target_combination_vs_sum"],
                    "target": f"<= {cfg['target_combination_vs_sum']:g}x the sum of its "
                              f"components ({when})",
                    "pass": bool(r <= cfg["target_combination_vs_sum"])})
    return out


def busy_markdown(cfg: dict, res: dict) -> list:
    b = res["busy_fits"]
    tg = {t["method"]: t for t in res["targets"]}
    labels = {"gaussood_gaussian": "GaussianScorer()", "gaussood_norm_shell": "NormShellScorer()",
              "gaussood_combination": "PValueCombination() (Gaussian + norm shell)"}

    def share(c):
        return "n/a" if c is None else f"{100 * c['other_share_of_all_cpus']:.0f}%"
    lines = ["", f"## Fits on a busy machine ({b['rows']:,} x {b['features']} {b['dtype']})", "",
             f"Quiet: nothing else started (other processes used "
             f"{share(b['quiet_contention'])} of the CPUs). Busy: {b['busy_processes']} "
             f"background processes, one BLAS thread each, in an eigh loop (other processes "
             f"used {share(b['busy_contention'])} of the CPUs). Medians of "
             f"{cfg['repeats_busy']} fits; {cfg['threads']} BLAS threads in this process.", "",
             "| fit | quiet s | busy s | busy / quiet | target | result |",
             "|---|---:|---:|---:|---|---|"]
    for name, label in labels.items():
        q, w = b["quiet"][name]["median_s"], b["busy"][name]["median_s"]
        target = result = ""
        if name == "gaussood_gaussian":
            t = tg["gaussood_gaussian_busy_fit"]
            target, result = t["target"], "**PASS**" if t["pass"] else "**FAIL**"
        lines.append(f"| {label} | {q:.3f} | {w:.3f} | {w / q:.2f}x | {target} | {result} |")
    for when in ("quiet", "busy"):
        t = tg[f"gaussood_combination_{when}_fit"]
        lines.append(f"| PValueCombination / (GaussianScorer + NormShellScorer), {when} | | | "
                     f"{t['ratio']:.2f}x | {t['target']} | "
                     f"{'**PASS**' if t['pass'] else '**FAIL**'} |")
    return lines


def targets(cfg: dict, res: dict) -> list:
    if "timings" not in res:  # --busy-only
        return busy_targets(cfg, res)
    T = res["timings"]
    us = lambda name: T[name]["score"]["us_per_row"]  # noqa: E731
    out = busy_targets(cfg, res) if "busy_fits" in res else []

    def add(name, ref, ratio, target, passed, text):
        out.append({"method": name, "reference": ref, "ratio": ratio, "target": text,
                    "target_value": target, "pass": bool(passed)})

    r = us("numpy_reference") / us("gaussood_gaussian")
    add("gaussood_gaussian", "numpy_reference", r, cfg["target_gauss_vs_numpy"],
        r >= cfg["target_gauss_vs_numpy"], f">= {cfg['target_gauss_vs_numpy']}x numpy throughput")
    r = us("torch_ood_mahalanobis_class") / us("gaussood_gaussian_class")
    add("gaussood_gaussian_class", "torch_ood_mahalanobis_class", r, cfg["target_class_vs_torch"],
        r >= cfg["target_class_vs_torch"], f">= {cfg['target_class_vs_torch']:g}x pytorch-ood (10 classes)")
    r = us("sklearn_knn_cosine") / us("gaussood_knn_flat")
    add("gaussood_knn_flat", "sklearn_knn_cosine", r, cfg["target_knn_vs_sklearn"],
        r >= cfg["target_knn_vs_sklearn"], f">= {cfg['target_knn_vs_sklearn']:g}x scikit-learn k-NN")
    for label in ("gaussood_knn_ivf", "gaussood_knn_ivf_default"):
        r = us("sklearn_knn_cosine") / us(label)
        info = res[label]
        passed = (r >= cfg["target_ivf_vs_sklearn"] and info["recall_at_k"] >= cfg["ivf_min_recall"]
                  and info["auroc_gap_vs_exact"] <= cfg["target_ivf_auroc_gap"])
        add(label, "sklearn_knn_cosine", r, cfg["target_ivf_vs_sklearn"], passed,
            f">= {cfg['target_ivf_vs_sklearn']:g}x scikit-learn, recall@{cfg['k']} >= "
            f"{cfg['ivf_min_recall']}, |dAUROC| <= {cfg['target_ivf_auroc_gap']}")
    r = T["gaussood_gaussian"]["fit"]["median_s"] / T["sklearn_ledoitwolf"]["fit"]["median_s"]
    add("gaussood_gaussian_fit", "sklearn_ledoitwolf_fit", r, cfg["target_fit_vs_ledoitwolf"],
        r <= cfg["target_fit_vs_ledoitwolf"],
        f"fit time <= {cfg['target_fit_vs_ledoitwolf']:g}x LedoitWolf().fit")
    return out


def markdown(cfg: dict, res: dict) -> str:
    if "timings" not in res:  # --busy-only
        head = [f"# gaussood speed benchmark: fits on a busy machine"
                f"{' (quick mode)' if res['quick'] else ''}", "",
                f"SYNTHETIC features (seed {cfg['seed']}). CPU: {res['hardware']['cpu_model']}, "
                f"{res['hardware']['cpu_count']} cores. Total wall time: "
                f"{res['wall_time_s']:.0f} s."]
        return "\n".join(head + busy_markdown(cfg, res)) + "\n"
    T, A = res["timings"], res["auroc"]
    tg = {t["method"]: t for t in res["targets"]}
    n_fit, n_t, n_s = cfg["n_fit"], cfg["n_score"], cfg["n_score_slow"]
    lines = [
        f"# gaussood speed benchmark{' (quick mode)' if res['quick'] else ''}",
        "",
        f"SYNTHETIC features (no real embeddings yet): {cfg['n_classes']}-class Gaussian "
        f"mixture in {cfg['n_features']}-d, covariance eigenvalues 1/(1+i)^{cfg['spectrum_decay']} "
        f"in a random rotation; OOD = shifted, rescaled mixture; seed {cfg['seed']}. "
        f"Fit on {n_fit:,} x {cfg['n_features']} float32; scored {n_t:,} x {cfg['n_features']} "
        f"float32 (half ID, half OOD). Subset rows are timed on {n_s:,} random test rows "
        "and reported per row. "
        f"CPU: {res['hardware']['cpu_model']}, {res['hardware']['cpu_count']} cores, "
        f"{cfg['threads']} threads. Times are medians of the repeats "
        f"(fast methods: {cfg['repeats_fast']}, IVF: {cfg['repeats_ivf']}, slow: "
        f"{cfg['repeats_slow']}); ratios are "
        "throughput ratios against the reference named in the target (fit: time ratio).",
        "",
        "| method | fit s | score us/row | rows/s | scored rows | AUROC | ratio vs reference | target | result |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]

    def row(name, label=None, ratio="", target="", result=""):
        t = T[name]
        fit = f"{t['fit']['median_s']:.3f}" if "fit" in t else ""
        if "index_build" in t:
            fit += f" (index only: {t['index_build']['median_s']:.3f})"
        sc = t.get("score", {})
        usr = f"{sc['us_per_row']:.2f}" if sc else ""
        rps = f"{sc['rows_per_s']:,.0f}" if sc else ""
        rows = f"{sc['rows']:,}" + (" (subset)" if sc and sc["rows"] < n_t else "") if sc else ""
        a = f"{A[name]:.4f}" if name in A else ""
        lines.append(f"| {label or LABELS[name]} | {fit} | {usr} | {rps} | {rows} | {a} | "
                     f"{ratio} | {target} | {result} |")

    def verdict(name):
        t = tg[name]
        return (f"{t['ratio']:.2f}x", t["target"], "**PASS**" if t["pass"] else "**FAIL**")

    row("numpy_reference", ratio="1.00x (reference)")
    row("sklearn_empirical")
    row("sklearn_ledoitwolf", ratio="fit reference")
    row("torch_ood_mahalanobis")
    row("torch_ood_mahalanobis_class", ratio="reference")
    row("gaussood_gaussian", None, *verdict("gaussood_gaussian"))
    fit_t = tg["gaussood_gaussian_fit"]
    lines.append(f"| gaussood GaussianScorer fit, one class (vs LedoitWolf().fit) | "
                 f"{T['gaussood_gaussian']['fit']['median_s']:.3f} | | | | | "
                 f"{fit_t['ratio']:.2f}x time | {fit_t['target']} | "
                 f"{'**PASS**' if fit_t['pass'] else '**FAIL**'} |")
    chi2 = T["gaussood_gaussian_chi2"]["fit"]["median_s"]
    lines.append(f"| gaussood GaussianScorer(calibration='chi2') fit, one class (no calibration "
                 f"scores) | {chi2:.3f} | | | | | "
                 f"{chi2 / T['sklearn_ledoitwolf']['fit']['median_s']:.2f}x time | | |")
    row("gaussood_gaussian_class", None, *verdict("gaussood_gaussian_class"))
    row("sklearn_knn_cosine", ratio="reference")
    sk = T["sklearn_knn_cosine"]["score"]["us_per_row"]
    row("torch_ood_knn", ratio=f"{sk / T['torch_ood_knn']['score']['us_per_row']:.2f}x")
    row("gaussood_knn_flat_subset", ratio=f"{sk / T['gaussood_knn_flat_subset']['score']['us_per_row']:.2f}x")
    row("gaussood_knn_flat", None, *verdict("gaussood_knn_flat"))
    for label in ("gaussood_knn_ivf", "gaussood_knn_ivf_default"):
        info = res[label]
        name = (f"{LABELS[label]}: n_lists={info['n_lists']}, n_probe={info['n_probe']}, "
                f"recall@{cfg['k']}={info['recall_at_k']:.4f}, "
                f"dAUROC={info['auroc_gap_vs_exact']:.4f}")
        row(label, name, *verdict(label))
    if "memory" in res:
        m = res["memory"]
        lines.append(f"| gaussood GaussianScorer, one class, {m['rows']:,} rows under tracemalloc "
                     f"(peak extra {m['peak_extra_mb']:.1f} MB for {m['input_mb']:,.0f} MB input) | | "
                     f"{m['us_per_row']:.2f} | {1e6 / m['us_per_row']:,.0f} | {m['rows']:,} | | | "
                     f"O(chunk x d) extra memory | |")
    c = res["checks"]
    held = ("" if c["knn_indexed_rows"] == n_fit else
            f" KNNScorer indexed only {c['knn_indexed_rows']:,} of the {n_fit:,} fit rows;")
    choice = res["ivf_choice"]
    lines += [
        "",
        f"Notes. k-NN: k = {cfg['k']}, cosine on L2-normalised features.{held} The "
        "scikit-learn / pytorch-ood k-NN baselines and the exact neighbours for recall are "
        f"built on exactly the {c['knn_indexed_rows']:,} rows KNNScorer indexed. KNNScorer fit "
        f"time includes its calibration ('{c['knn_calibration']}'); 'index only' is the faiss "
        "index build alone. IVF setting: " + choice["rule"] + " (sweep on "
        f"{res['ivf_sweep']['queries']:,} queries, in the JSON); recall@k and dAUROC in the "
        f"table are on {res['gaussood_knn_ivf']['recall_queries']:,} random test queries "
        f"and on all {n_t:,} scores. scikit-learn NearestNeighbors gets queries "
        "normalised beforehand (not timed). pytorch-ood predict_features is called in "
        f"batches of {cfg['torch_batch']}. GaussianScorer() calibration: "
        f"'{c['gaussood_calibration']}' (one class), '{c['gaussood_class_calibration']}' "
        "(10 classes); its fit time includes computing the calibration scores. Max relative "
        f"difference of GaussianScorer's D^2 to the numpy reference: "
        f"{c['gaussood_vs_numpy_max_rel_diff_d2']:.1e}.",
    ]
    if "memory" in res:
        m = res["memory"]
        lines.append(
            f"Memory: scoring {m['rows']:,} rows ({m['input_mb']:,.0f} MB float32) peaked at "
            f"{m['peak_extra_mb']:.1f} MB extra (tracemalloc), of which {m['output_mb']:.1f} MB is "
            f"the float64 output; the rest, {m['peak_extra_minus_output_mb']:.1f} MB, is "
            f"{m['peak_extra_minus_output_in_chunks']:.1f}x one {m['chunk_mb']:.0f} MB chunk "
            f"(chunk_size={cfg['chunk_size']}).")
    core = res["hardware"]["openblas_coretype"]
    if core["after"] != core["before_gaussood_imported_faiss"]:
        lines.append(f"OPENBLAS_CORETYPE={core['after']} was set by gaussood before it imported "
                     "faiss (faiss's bundled OpenBLAS does not recognise this CPU by itself).")
    for note in res["hardware"]["notes"]:
        lines.append(f"Hardware note: {note}")
    load = res["load_average_1_5_15min"]
    if load["start"] is not None:
        lines.append(f"Load average (1 min) at start {load['start'][0]:.2f}, at end "
                     f"{load['end'][0]:.2f} on {res['hardware']['cpu_count']} cores.")
    tot = res["contention"]["total"]
    if tot is not None:
        worst = max((st for st in res["contention"]["steps"] if st["wall_s"] >= 2.0),
                    key=lambda st: st["other_share_of_all_cpus"], default=None)
        text = (f"Contention: other processes used {100 * tot['other_share_of_all_cpus']:.1f}% "
                "of the CPUs over the run")
        if worst is not None:
            text += (f" (worst step of 2 s or more: {100 * worst['other_share_of_all_cpus']:.0f}% "
                     f"during '{worst['step'].strip()}')")
        lines.append(text + ".")
    lines.append(f"Total wall time: {res['wall_time_s']:.0f} s.")
    if "busy_fits" in res:
        lines += busy_markdown(cfg, res)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, no memory run; writes speed_quick.{json,md}")
    parser.add_argument("--busy-only", action="store_true",
                        help="only the busy-machine fits; writes speed_busy[_quick].{json,md}")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                        help=f"where to write the results (default {RESULTS_DIR})")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(QUICK)
    wall0 = time.perf_counter()
    coretype_before = os.environ.get("OPENBLAS_CORETYPE")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    with threadpool_limits(cfg["threads"]):
        res = {"quick": args.quick, "synthetic_features": True,
               "data": ("synthetic: seeded 10-class Gaussian mixture with a decaying, rotated "
                        "covariance spectrum; OOD = shifted, rescaled mixture (no real "
                        "embeddings yet)"),
               "config": cfg, "source": source_state(),
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
        res.update(run_busy_only(cfg) if args.busy_only else run(cfg, args.quick))
        res["versions"], res["hardware"] = versions(), hardware()
        res["hardware"]["openblas_coretype"] = {
            "before_gaussood_imported_faiss": coretype_before,
            "after": os.environ.get("OPENBLAS_CORETYPE")}
    log("done")
    res["wall_time_s"] = time.perf_counter() - wall0
    res["contention"] = {"total": CONTENTION.total(), "steps": CONTENTION.steps,
                         "note": "CPU time of other processes on this machine (from /proc/stat "
                                 "minus this process) while each step ran"}
    res["load_average_1_5_15min"] = {"start": load_start,
                                     "end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    res["targets"] = targets(cfg, res)
    table = markdown(cfg, res)

    stem = ("speed_busy" if args.busy_only else "speed") + ("_quick" if args.quick else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    (args.out_dir / f"{stem}.md").write_text(table)
    print()
    print(table)
    print(f"wrote {args.out_dir / (stem + '.json')} and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
