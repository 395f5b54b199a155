"""Batch shift detection (gaussood.shift): false-alarm rate (marginal and conditional)
and power, with a permutation MMD as the reference peer.

Result: benchmarks/results/shift.md (one core; configuration, hardware, versions and wall
time in shift.json); docs/shift.md discusses it.

1. Synthetic: conformal p-values (m = 1,000 / 8,000 / 40,000) with a fresh calibration
   set per batch (marginal) and a few fixed sets (conditional); a parametric
   GaussianScorer on Gaussian rows, refit per repetition (marginal) and fixed
   (conditional), every test, the naive independent-uniform null beside.
2. CIFAR-10 (benchmarks/checkpoints/cifar10-cpu.pt, backbone 256-d), scorers fit on the
   50,000 train embeddings. (a) As fitted; (b) held out: per replicate a random split
   of the 10,000 test rows into 8,000 calibration / reference rows and 2,000 batch
   rows; (c) a few fixed splits (conditional).
3. Power: a share of Fashion-MNIST rows (JPEG q75) in ID batches (the held-out
   replicates' splits), and covariate shifts of the seed split's 2,000 batch images
   (JPEG quality, blur, brightness, noise; re-encoded at JPEG q75 but the JPEG rows).
4. ``--open-set`` (a separate run, shift_open_set.*): cifar10-cpu-c0to5.pt, ID =
   classes 0-5, a share of classes 6-9 in ID batches (4,000 calibration rows; no MMD).

Run: ``taskset -c 0 python benchmarks/shift.py`` (``--reduced``: 299 permutation draws
for Hotelling's reference null instead of 999; ``--quick``: a smoke run). Embeddings are cached under
~/.cache/gaussood/cache/embeddings (gaussood.deep.extract_embeddings). ``--export DIR``
only writes part 2's embeddings and the seed split as .npy files for
benchmarks/shift_alibi.py (alibi-detect's MMD and KS detectors, run in their own venv).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "seed": 0, "alpha": 0.05, "batch_sizes": [100, 1000], "null_batches": 1000,
    "power_batches": 200, "ood_shares": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
    "m_calibration": 8000, "mmd_batches": 20, "mmd_reference": 500,
    "mmd_permutations": 100, "synthetic_batches": 5000, "synthetic_m": [1000, 8000, 40000],
    "conditional_sets": 10, "conditional_batches": 300, "encoder": "cifar10-cpu.pt",
    "open_set_null": 500, "parametric_n_fit": [8000, 40000], "parametric_d": 64,
    "parametric_refits": 1000, "reference_replicates": 1000, "reference_null": 999,
    "conditional_m_real": 5000, "batches_per_fit": 4, "null_batches_per_split": 20,
    "label": "full",
}
REDUCED = {"reference_null": 299,
           "label": "reduced (python benchmarks/shift.py --reduced: Hotelling's permutation "
                    "null with 299 draws instead of 999)"}
SHIFTS = {  # name -> (kind, strength)
    "jpeg q30": ("jpeg", 30), "jpeg q10": ("jpeg", 10),
    "blur r0.5": ("blur", 0.5), "blur r1.0": ("blur", 1.0),
    "bright x0.7": ("bright", 0.7), "bright x1.3": ("bright", 1.3),
    "noise sd4": ("noise", 4), "noise sd8": ("noise", 8), "noise sd16": ("noise", 16),
}
TESTS = ("ks", "fisher", "hc", "hotelling")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ the peer
def mmd_test(X, Y, permutations, rng):
    """Permutation test of MMD^2 (biased V-statistic, RBF kernel, bandwidth by the
    median heuristic gamma = 1 / median squared distance). Returns (MMD^2, p-value)."""
    Z = np.vstack([X, Y]).astype(np.float64)
    sq = np.einsum("ij,ij->i", Z, Z)
    D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0)
    K = np.exp(-D / np.median(D[np.triu_indices_from(D, 1)]))
    n, N = X.shape[0], Z.shape[0]
    labels = np.zeros((permutations + 1, N), dtype=bool)
    labels[:, :n] = True
    for row in labels[1:]:
        rng.shuffle(row)
    W = np.where(labels, 1.0 / n, -1.0 / (N - n))
    stats_ = np.einsum("pi,pi->p", W @ K, W)
    return float(stats_[0]), float((1 + np.sum(stats_[1:] >= stats_[0])) / (permutations + 1))


# ------------------------------------------------------------ 1. synthetic
def synthetic(cfg, rng):
    from gaussood import shift

    out = {"marginal": [], "conditional": [], "parametric": []}
    B, alpha, keys = cfg["synthetic_batches"], cfg["alpha"], ("ks", "fisher", "hc")

    def pvalues(cal, n):   # conformal p-values of n fresh N(0, 1) scores
        return (1.0 + np.searchsorted(cal, rng.normal(size=n), "right")) / (cal.size + 1.0)

    for m in cfg["synthetic_m"]:
        for n in cfg["batch_sizes"]:
            rej = dict.fromkeys((*keys, *(k + " naive" for k in keys)), 0)
            for _ in range(B):   # a fresh calibration set per batch: the marginal rate
                p = pvalues(np.sort(rng.normal(size=m)), n)
                for k in keys:
                    rej[k] += shift.test_pvalues(p, k, alpha, calibration_size=m).shift
                    rej[k + " naive"] += shift.test_pvalues(p, k, alpha).shift
            out["marginal"].append({"m": m, "n": n, "batches": B,
                                    **{k: v / B for k, v in rej.items()}})
            log(f"synthetic marginal: {out['marginal'][-1]}")
        n = max(cfg["batch_sizes"])   # one calibration set, many batches: conditional
        rates_ = {k: [] for k in keys}
        for _ in range(cfg["conditional_sets"]):
            cal, hits = np.sort(rng.normal(size=m)), dict.fromkeys(keys, 0)
            for _ in range(cfg["conditional_batches"]):
                p = pvalues(cal, n)
                for k in keys:
                    hits[k] += shift.test_pvalues(p, k, alpha, calibration_size=m).shift
            for k in keys:
                rates_[k].append(hits[k] / cfg["conditional_batches"])
        out["conditional"].append({"m": m, "n": n, "sets": cfg["conditional_sets"],
                                   "batches_per_set": cfg["conditional_batches"],
                                   **{k: sorted(v) for k, v in rates_.items()}})
        log(f"synthetic conditional: {out['conditional'][-1]}")
    for n_fit in cfg["parametric_n_fit"]:
        out["parametric"] += parametric(cfg, rng, n_fit)
    return out


PARAM_KEYS = ("ks", "fisher", "hc", "hotelling", "ks naive", "fisher naive", "hc naive")


def parametric_batch(scorer, X, cfg):
    """{test: alarm} for one batch against a parametric (F law) GaussianScorer: the
    p-value tests with the null that models the fit's estimation error (shift.test),
    the same p-values as independent uniforms ("naive"), Hotelling's F law."""
    from gaussood import shift

    p = scorer.pvalue(X)
    out = {k: shift.test(scorer, X, k, cfg["alpha"], pvalues=p).shift for k in TESTS}
    for k in ("ks", "fisher", "hc"):
        out[k + " naive"] = shift.test_pvalues(p, k, cfg["alpha"]).shift
    return out


def parametric(cfg, rng, n_fit):
    """GaussianScorer("empirical", calibration="f") on Gaussian rows, d = 64. Marginal:
    a fresh fit per repetition (batches_per_fit batches of each size per fit).
    Conditional: a few fits, many batches each; the spread of the fits' rates."""
    from gaussood import GaussianScorer

    d = cfg["parametric_d"]
    scale = 1.0 / np.sqrt(1.0 + np.arange(d))
    rows = []
    rej = {n: dict.fromkeys(PARAM_KEYS, 0) for n in cfg["batch_sizes"]}
    refits, per_fit = cfg["parametric_refits"], cfg["batches_per_fit"]
    for _ in range(refits):
        scorer = GaussianScorer("empirical", calibration="f").fit(
            rng.normal(size=(n_fit, d)) * scale)
        for n in cfg["batch_sizes"]:
            for _ in range(per_fit):
                for k, v in parametric_batch(scorer, rng.normal(size=(n, d)) * scale,
                                             cfg).items():
                    rej[n][k] += v
    for n in cfg["batch_sizes"]:
        rows.append({"guarantee": "marginal", "n_fit": n_fit, "d": d, "n": n,
                     "refits": refits, "batches": refits * per_fit,
                     **{k: v / (refits * per_fit) for k, v in rej[n].items()}})
        log(f"synthetic parametric {rows[-1]}")
    rates = {n: {k: [] for k in PARAM_KEYS} for n in cfg["batch_sizes"]}
    B = cfg["conditional_batches"]
    for _ in range(cfg["conditional_sets"]):
        scorer = GaussianScorer("empirical", calibration="f").fit(
            rng.normal(size=(n_fit, d)) * scale)
        for n in cfg["batch_sizes"]:
            hits = dict.fromkeys(PARAM_KEYS, 0)
            for _ in range(B):
                for k, v in parametric_batch(scorer, rng.normal(size=(n, d)) * scale,
                                             cfg).items():
                    hits[k] += v
            for k in PARAM_KEYS:
                rates[n][k].append(hits[k] / B)
    for n in cfg["batch_sizes"]:
        rows.append({"guarantee": "conditional", "n_fit": n_fit, "d": d, "n": n,
                     "fits": cfg["conditional_sets"], "batches_per_fit": B,
                     **{k: sorted(v) for k, v in rates[n].items()}})
        log(f"synthetic parametric {rows[-1]}")
    return rows


# ------------------------------------------------------------------ 2. data
def shifted_images(images, kind, strength, rng):
    from PIL import Image, ImageFilter

    from gaussood.deep import jpeg_reencode

    if kind == "jpeg":
        return jpeg_reencode(images, strength)
    if kind == "blur":
        out = np.stack([np.asarray(Image.fromarray(im).filter(
            ImageFilter.GaussianBlur(strength))) for im in images])
    elif kind == "bright":
        out = np.clip(images.astype(np.float64) * strength, 0, 255).round().astype(np.uint8)
    else:
        noisy = images.astype(np.float64) + rng.normal(scale=strength, size=images.shape)
        out = np.clip(noisy, 0, 255).round().astype(np.uint8)
    return jpeg_reencode(out, 75)


def embed_all(cfg, root, pool_idx):
    import torch

    from gaussood.deep import load_dataset
    from gaussood.deep.data import ImageSet
    from gaussood.deep.embed import extract_embeddings

    torch.set_num_threads(1)
    encoder = REPO / "benchmarks" / "checkpoints" / cfg["encoder"]
    train = load_dataset("cifar10", "train", root=root)
    test = load_dataset("cifar10", "test", root=root)
    fashion = load_dataset("fashion-mnist", "test", root=root, jpeg_quality=75)
    emb = {name: extract_embeddings(encoder, data, progress=False)
           for name, data in (("train", train), ("test", test), ("fashion", fashion))}
    pool = test.images[pool_idx]
    for name, (kind, strength) in SHIFTS.items():
        images = shifted_images(pool, kind, strength, np.random.default_rng(cfg["seed"]))
        data = ImageSet(images, test.labels[pool_idx], f"cifar10-shift-{kind}{strength}",
                        list(test.classes), f"CIFAR-10 test pool, {name}; N={len(images)}")
        emb[name] = extract_embeddings(encoder, data, progress=False)
        log(f"embedded {name}")
    return emb


REAL_TESTS = (*TESTS, "hotelling ref")


class Setup:
    """One calibration split: the conformal scorer (fit on train) calibrated on the m
    held-out rows, Hotelling's F-law reference fit on them, and (``with_reference``)
    the same rows as the permutation null of Hotelling against the train fit."""

    def __init__(self, scorer, X_cal, with_reference):
        from gaussood import GaussianScorer, shift

        self.scorer = scorer.calibrate(X_cal)
        with warnings.catch_warnings():  # its law misfit (recorded in 'real') is not used:
            warnings.simplefilter("ignore", UserWarning)  # only its moments, for Hotelling
            self.f_fit = GaussianScorer("empirical", calibration="chi2").fit(X_cal)
        self.ref = shift.Reference(scorer, X_cal) if with_reference else None


def run_tests(setup, X, s, cfg, times, mmd=None):
    """{test: decision} for one batch (``s``: the conformal scorer's scores of its rows),
    every test timed (seconds appended to times)."""
    from gaussood import shift

    out, alpha = {}, cfg["alpha"]
    p = setup.scorer.pvalue_from_scores(s)
    calls = {k: (setup.scorer, {"pvalues": p}) for k in ("ks", "fisher", "hc")}
    calls["hotelling"] = (setup.f_fit, {})
    if setup.ref is not None:
        calls["hotelling ref"] = (setup.scorer, {"reference": setup.ref,
                                                 "n_null": cfg["reference_null"]})
    for k, (sc, kw) in calls.items():
        t = time.perf_counter()
        out[k] = shift.test(sc, X, k.split()[0], alpha, **kw).shift
        times.setdefault(k, []).append(time.perf_counter() - t)
    if mmd is not None:
        Y, rng = mmd
        t = time.perf_counter()
        out["mmd"] = mmd_test(X, Y, cfg["mmd_permutations"], rng)[1] <= alpha
        times.setdefault("mmd", []).append(time.perf_counter() - t)
    return out


def share_replicates(cfg, rng, scorer, X_id, s_id, X_ood, s_ood, m, shares, replicates, *,
                     with_mmd):
    """Replicates of a fresh random split of the ID rows (the marginal rate): m rows
    calibrate ``scorer`` (``Setup``), batches take other ID rows and a Binomial(n, share)
    number of OOD rows (every share in the first power_batches replicates; share 0 in
    all, as up to null_batches_per_split disjoint batches of the split's other rows; the
    reference null in the first reference_replicates). ``s_*``: the scorer's
    scores of the rows. Returns ({(n, share): {test: alarms}}, {(n, share): {test:
    batches}}, times)."""
    hits = {(n, e): {} for n in cfg["batch_sizes"] for e in shares}
    counts = {(n, e): {} for n in cfg["batch_sizes"] for e in shares}
    times = {n: {} for n in cfg["batch_sizes"]}
    for r in range(replicates):
        perm = rng.permutation(X_id.shape[0])
        cal = perm[:m]
        setup = Setup(scorer, X_id[cal], r < cfg["reference_replicates"])
        for n in cfg["batch_sizes"]:
            cells = [(0.0, b) for b in range(min(cfg["null_batches_per_split"],
                                                 (X_id.shape[0] - m) // n))]
            cells += [(e, 0) for e in shares if e and r < cfg["power_batches"]]
            for e, b in cells:
                k_ood = rng.binomial(n, e) if e else 0
                i = perm[m + b * n:m + (b + 1) * n - k_ood]
                j = rng.choice(X_ood.shape[0], k_ood, replace=False)
                X = np.vstack([X_id[i], X_ood[j]])
                s = np.concatenate([s_id[i], s_ood[j]])
                mmd = (X_id[cal[:cfg["mmd_reference"]]], rng) \
                    if with_mmd and r < cfg["mmd_batches"] and b == 0 else None
                for k, v in run_tests(setup, X, s, cfg, times[n], mmd).items():
                    hits[n, e][k] = hits[n, e].get(k, 0) + v
                    counts[n, e][k] = counts[n, e].get(k, 0) + 1
        if r % 50 == 49:
            log(f"replicate {r + 1} of {replicates}")
    return hits, counts, times


def rates(hits, counts):
    return {**{k: v / counts[k] for k, v in hits.items()},
            "batches": {k: counts[k] for k in hits}}


def seed_split(cfg, n_test=10000):
    """The seed's permutation of the CIFAR-10 test rows: its first m_calibration rows
    calibrate, the other (sorted) rows are the pool the covariate shifts are made from."""
    split = np.random.default_rng(cfg["seed"]).permutation(n_test)
    return split, np.sort(split[:cfg["m_calibration"]]), np.sort(split[cfg["m_calibration"]:])


def export_name(name):
    """File stem of an exported embedding ('jpeg q30' -> 'jpeg_q30')."""
    return name.replace(" ", "_")


def export(cfg, root, folder):
    """Write the real-data part's embeddings as .npy files in ``folder`` for a peer run
    in another environment (benchmarks/shift_alibi.py): ``test`` (CIFAR-10 test rows),
    ``fashion``, one per SHIFTS entry (the shifted pool rows, ``export_name``), ``split``
    (``seed_split``'s permutation) and ``export.json`` (the configuration and the files)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    split, _, pool_idx = seed_split(cfg)
    emb = embed_all(cfg, root, pool_idx)
    files = {name: export_name(name) + ".npy" for name in ("test", "fashion", *SHIFTS)}
    for name, file in files.items():
        np.save(folder / file, np.asarray(emb[name]))
    np.save(folder / "split.npy", split)
    (folder / "export.json").write_text(json.dumps(
        {"config": cfg, "files": files, "split": "split.npy", "shifts": list(SHIFTS)},
        indent=2) + "\n")
    log(f"exported {len(files)} embedding arrays and the split to {folder}")
    return files


def real(cfg, root, rng):
    from gaussood import GaussianScorer, shift

    n_test, m = 10000, cfg["m_calibration"]
    split, cal_idx, pool_idx = seed_split(cfg, n_test)
    t = time.perf_counter()
    emb = embed_all(cfg, root, pool_idx)
    embed_s = time.perf_counter() - t
    Xtr, Xte = np.asarray(emb["train"]), np.asarray(emb["test"])
    scorer = GaussianScorer(random_state=cfg["seed"]).fit(Xtr)
    param = GaussianScorer("empirical", calibration="f").fit(Xtr)
    s_test = scorer.score_samples(Xte)
    out = {"embed_seconds": embed_s, "fit": f"GaussianScorer() on {Xtr.shape[0]} x "
           f"{Xtr.shape[1]} train embeddings, calibration {scorer.calibration_} "
           f"(m = {scorer.calibration_scores_.shape[0]}); 'F law': GaussianScorer("
           "'empirical', calibration='f') on the same rows", "as_fitted": [],
           "law_misfit": getattr(param, "law_misfit_", None)}
    alpha, B = cfg["alpha"], cfg["null_batches"]
    # (a) as fitted: cross-conformal on train, F law, Hotelling against the train fit
    p_conf, p_f = scorer.pvalue_from_scores(s_test), param.pvalue(Xte)
    out["f_law_row_rate"] = float(np.mean(p_f <= alpha))   # per-row false alarms, F law
    for n in cfg["batch_sizes"]:
        rej = {}
        for _ in range(B):
            idx = rng.choice(n_test, n, replace=False)
            for label, sc, p in (("conformal", scorer, p_conf), ("F law", param, p_f)):
                for k in ("ks", "fisher", "hc"):
                    key = f"{k} ({label})"
                    rej[key] = rej.get(key, 0) + shift.test(sc, Xte[idx], k, alpha,
                                                           pvalues=p[idx]).shift
            rej["hotelling"] = rej.get("hotelling", 0) + shift.test(
                scorer, Xte[idx], "hotelling", alpha).shift
        out["as_fitted"].append({"n": n, "batches": B, **{k: v / B for k, v in rej.items()}})
        log(f"as fitted n={n}: {out['as_fitted'][-1]}")
    # (b) held out: a fresh random split of the test set per replicate; the first
    # power_batches replicates also carry the Fashion-MNIST share cells (same split)
    held = copy.deepcopy(scorer)
    fashion = np.asarray(emb["fashion"])
    shares = [0.0] + list(cfg["ood_shares"])
    hits, counts, times = share_replicates(cfg, rng, held, Xte, s_test, fashion,
                                           scorer.score_samples(fashion), m, shares, B,
                                           with_mmd=True)
    out["held_out"] = [{"n": n, **rates(hits[n, 0.0], counts[n, 0.0])}
                       for n in cfg["batch_sizes"]]
    for row in out["held_out"]:
        log(f"held out: {row}")
    out["power"] = [{"n": n, "setting": f"Fashion-MNIST {100 * e:g}%",
                     **rates(hits[n, e], counts[n, e])}
                    for n in cfg["batch_sizes"] for e in shares[1:]]
    # covariate shift: the seed's split (its 2,000 batch rows were shifted and embedded)
    setup = Setup(held, Xte[cal_idx], True)
    mmd_ref = Xte[split[:cfg["mmd_reference"]]]   # split is unsorted: random rows
    for n in cfg["batch_sizes"]:
        for name in SHIFTS:
            Xs = np.asarray(emb[name])
            ss = held.score_samples(Xs)
            hit, cnt = {}, {}
            for b in range(cfg["power_batches"]):
                idx = rng.choice(Xs.shape[0], n, replace=False)
                mmd = (mmd_ref, rng) if b < cfg["mmd_batches"] else None
                for k, v in run_tests(setup, Xs[idx], ss[idx], cfg, times[n], mmd).items():
                    hit[k], cnt[k] = hit.get(k, 0) + v, cnt.get(k, 0) + 1
            out["power"].append({"n": n, "setting": name, **rates(hit, cnt)})
            log(f"power n={n} {name}: {out['power'][-1]}")
    out["ms_per_batch"] = {n: {k: 1000 * float(np.median(v)) for k, v in times[n].items()}
                           for n in cfg["batch_sizes"]}
    out["conditional"] = real_conditional(cfg, rng, held, Xte, s_test)
    return out


def real_conditional(cfg, rng, scorer, X, s):
    """One fixed split per set (the rate one deployment sees): m_cond calibration /
    reference rows, batches of the smallest size drawn from the other rows."""
    n, m = min(cfg["batch_sizes"]), cfg["conditional_m_real"]
    rates_ = {}
    for _ in range(cfg["conditional_sets"]):
        perm = rng.permutation(X.shape[0])
        setup = Setup(scorer, X[perm[:m]], True)
        pool, hits = perm[m:], {}
        for _ in range(cfg["conditional_batches"]):
            i = rng.choice(pool, n, replace=False)
            for k, v in run_tests(setup, X[i], s[i], cfg, {}).items():
                hits[k] = hits.get(k, 0) + v
        for k, v in hits.items():
            rates_.setdefault(k, []).append(v / cfg["conditional_batches"])
    row = {"n": n, "m": m, "pool": X.shape[0] - m, "sets": cfg["conditional_sets"],
           "batches_per_set": cfg["conditional_batches"],
           **{k: sorted(v) for k, v in rates_.items()}}
    log(f"real conditional: {row}")
    return row


# ------------------------------------------------------------- open set
def open_set(cfg, root, rng):
    """CIFAR-10 classes 0-5 as ID (encoder and scorer never saw 6-9), classes 6-9 as the
    OOD share; per replicate a fresh split of the ID test rows (calibration / batch)."""
    import torch

    from gaussood import GaussianScorer
    from gaussood.deep import load_dataset
    from gaussood.deep.embed import extract_embeddings

    torch.set_num_threads(1)
    encoder = REPO / "benchmarks" / "checkpoints" / "cifar10-cpu-c0to5.pt"
    t = time.perf_counter()
    emb = {k: np.asarray(extract_embeddings(encoder, load_dataset(
        "cifar10", split, root=root, classes=classes), progress=False))
        for k, split, classes in (("train", "train", range(6)), ("id", "test", range(6)),
                                  ("ood", "test", range(6, 10)))}
    embed_s = time.perf_counter() - t
    scorer = GaussianScorer(random_state=cfg["seed"]).fit(emb["train"])
    Xid, Xood = emb["id"], emb["ood"]
    m = 4000
    shares = [0.0, 0.02, 0.05, 0.1, 0.2]
    hits, counts, _ = share_replicates(cfg, rng, scorer, Xid, scorer.score_samples(Xid), Xood,
                                       scorer.score_samples(Xood), m, shares,
                                       cfg["open_set_null"], with_mmd=False)
    rows = [{"n": n, "ood_share": e, **rates(hits[n, e], counts[n, e])}
            for n in cfg["batch_sizes"] for e in shares]
    for row in rows:
        log(f"open set: {row}")
    return {"embed_seconds": embed_s, "m_calibration": m, "rows": rows,
            "fit": f"GaussianScorer() on {emb['train'].shape[0]} train rows of classes 0-5"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.environ.get("GAUSSOOD_DATA",
                                                     str(REPO.parent / "shared" / "data")),
                    help="data folder with the CIFAR-10 archive")
    ap.add_argument("--quick", action="store_true", help="few batches (a smoke run)")
    ap.add_argument("--reduced", action="store_true",
                    help="fewer permutation draws for Hotelling's reference null (REDUCED)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--export", type=Path, metavar="DIR",
                    help="only write the real-data embeddings and the seed split as .npy "
                         "files in DIR (for benchmarks/shift_alibi.py) and stop")
    ap.add_argument("--open-set", action="store_true",
                    help="only the open-set part (cifar10-cpu-c0to5.pt, classes 6-9 as OOD); "
                         "writes shift_open_set.*")
    args = ap.parse_args(argv)
    from shift_report import figure, markdown, open_set_markdown

    cfg = dict(CONFIG)
    if args.reduced:
        cfg.update(REDUCED)
    if args.quick:
        cfg.update(null_batches=40, power_batches=20, mmd_batches=3, synthetic_batches=40,
                   conditional_sets=2, conditional_batches=20, synthetic_m=[1000],
                   open_set_null=30, parametric_refits=20, reference_replicates=20,
                   parametric_n_fit=[8000], batches_per_fit=1, null_batches_per_split=2,
                   label="quick (a smoke run)")
    if args.export:
        export(cfg, args.root, args.export)
        return 0
    start = time.perf_counter()
    rng = np.random.default_rng(cfg["seed"])
    res = {"config": cfg, "environment": environment()}
    if args.open_set:
        res["open_set"] = open_set(cfg, args.root, rng)
        res["wall_seconds"] = time.perf_counter() - start
        write_results("shift_open_set" + ("_quick" if args.quick else ""), res,
                      open_set_markdown(res), args.out_dir)
        return 0
    res["synthetic"] = synthetic(cfg, rng)
    res["real"] = real(cfg, args.root, rng)
    res["wall_seconds"] = time.perf_counter() - start
    name = "shift_quick" if args.quick else "shift"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    figure(res, args.out_dir / f"{name}.png")
    write_results(name, res, markdown(res), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
