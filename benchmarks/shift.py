"""Batch shift detection (gaussood.shift): false-alarm rate and power, with a permutation
MMD as the reference peer.

Result: benchmarks/results/shift.md (one core; hardware, versions and wall time in
shift.json; about 12 min with the embeddings cached); docs/shift.md discusses it.

Sections
1. Synthetic scores: the false-alarm rate of every uniformity test on conformal
   p-values (m = 1,000 / 8,000 / 40,000 calibration scores, a fresh calibration set per
   batch: the marginal guarantee), beside the naive independent-uniform null; the spread
   of the rate across fixed calibration sets; a parametric GaussianScorer (exact F law)
   on Gaussian rows with every test, Hotelling included.
2. CIFAR-10 with benchmarks/checkpoints/cifar10-cpu.pt (backbone, 256-d), scorer fit on
   the 50,000 train embeddings. False alarms of ID test batches (a) as fitted (cross-
   conformal calibration on train, the F law), (b) held out: each replicate splits the
   10,000 test rows at random into 8,000 calibration rows (``calibrate``; Hotelling's
   reference is a GaussianScorer fit on them) and 2,000 batch rows.
3. Power: a share of Fashion-MNIST rows (JPEG q75) in ID batches (the held-out
   replicates' splits), and covariate shifts of the 2,000 batch images of the seed's
   split (JPEG quality, blur, brightness, noise; re-encoded at JPEG q75 but the JPEG
   rows). Hotelling's reference: a GaussianScorer fit on the calibration rows.
4. ``--open-set`` (a separate run, shift_open_set.*): benchmarks/checkpoints/
   cifar10-cpu-c0to5.pt, ID = CIFAR-10 classes 0-5, a share of classes 6-9 test rows
   in ID batches (4,000 calibration rows per replicate; no MMD).

Run: ``python benchmarks/shift.py`` (``--quick``: fewer batches). Embeddings are cached
under ~/.cache/gaussood/cache/embeddings (gaussood.deep.extract_embeddings).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
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
    "mmd_permutations": 100, "synthetic_batches": 2000, "synthetic_m": [1000, 8000, 40000],
    "conditional_sets": 10, "conditional_batches": 300, "encoder": "cifar10-cpu.pt",
    "open_set_null": 500,
}
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
    from gaussood import GaussianScorer, shift

    out = {"marginal": [], "conditional": [], "parametric": []}
    B, alpha = cfg["synthetic_batches"], cfg["alpha"]
    for m in cfg["synthetic_m"]:
        for n in cfg["batch_sizes"]:
            rej = {k: 0 for k in ("ks", "fisher", "hc", "ks naive", "fisher naive")}
            for _ in range(B):   # a fresh calibration set per batch: the marginal rate
                cal = np.sort(rng.normal(size=m))
                p = (1.0 + np.searchsorted(cal, rng.normal(size=n), "right")) / (m + 1.0)
                for method in ("ks", "fisher", "hc"):
                    rej[method] += shift.test_pvalues(p, method, alpha,
                                                      calibration_size=m).shift
                    if method != "hc":
                        rej[method + " naive"] += shift.test_pvalues(p, method, alpha).shift
            out["marginal"].append({"m": m, "n": n, "batches": B,
                                    **{k: v / B for k, v in rej.items()}})
            log(f"synthetic marginal m={m} n={n}: {out['marginal'][-1]}")
    n = max(cfg["batch_sizes"])
    for m in cfg["synthetic_m"]:   # one calibration set, many batches: the conditional rate
        rates = {k: [] for k in ("ks", "fisher", "hc")}
        for _ in range(cfg["conditional_sets"]):
            cal = np.sort(rng.normal(size=m))
            hits = {k: 0 for k in rates}
            for _ in range(cfg["conditional_batches"]):
                p = (1.0 + np.searchsorted(cal, rng.normal(size=n), "right")) / (m + 1.0)
                for k in rates:
                    hits[k] += shift.test_pvalues(p, k, alpha, calibration_size=m).shift
            for k in rates:
                rates[k].append(hits[k] / cfg["conditional_batches"])
        out["conditional"].append({"m": m, "n": n, "sets": cfg["conditional_sets"],
                                   "batches_per_set": cfg["conditional_batches"],
                                   **{k: sorted(v) for k, v in rates.items()}})
        log(f"synthetic conditional m={m}: {out['conditional'][-1]}")
    for n_fit in (8000, 40000):   # parametric: exact F law on Gaussian rows, d = 64
        d = 64
        scale = 1.0 / np.sqrt(1.0 + np.arange(d))
        scorer = GaussianScorer("empirical", calibration="f").fit(
            rng.normal(size=(n_fit, d)) * scale)
        for n in cfg["batch_sizes"]:
            rej = {k: 0 for k in TESTS}
            for _ in range(cfg["null_batches"]):
                X = rng.normal(size=(n, d)) * scale
                p = scorer.pvalue(X)
                for k in TESTS:
                    rej[k] += shift.test(scorer, X, k, alpha, pvalues=p).shift
            out["parametric"].append({"n_fit": n_fit, "d": d, "n": n,
                                      "batches": cfg["null_batches"],
                                      **{k: v / cfg["null_batches"] for k, v in rej.items()}})
            log(f"synthetic parametric n_fit={n_fit} n={n}: {out['parametric'][-1]}")
    return out


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


def run_tests(scorer, ref, X, p, cfg, times, mmd=None):
    """{test: decision} for one batch, every test timed (seconds appended to times)."""
    from gaussood import shift

    out = {}
    for k in TESTS:
        t = time.perf_counter()
        if k == "hotelling":
            out[k] = shift.test(ref, X, k, cfg["alpha"]).shift
        else:
            out[k] = shift.test(scorer, X, k, cfg["alpha"], pvalues=p).shift
        times.setdefault(k, []).append(time.perf_counter() - t)
    if mmd is not None:
        Y, rng = mmd
        t = time.perf_counter()
        out["mmd"] = mmd_test(X, Y, cfg["mmd_permutations"], rng)[1] <= cfg["alpha"]
        times.setdefault("mmd", []).append(time.perf_counter() - t)
    return out


def share_replicates(cfg, rng, scorer, X_id, s_id, X_ood, s_ood, m, shares, replicates, *,
                     with_mmd):
    """Replicates of a fresh random split of the ID rows: m calibrate ``scorer`` (and fit
    Hotelling's reference), batches take other ID rows and a Binomial(n, share) number of
    OOD rows (every share in the first power_batches replicates, share 0 in all).
    Returns ({(n, share): {test: alarms}}, {(n, share): [batches, MMD batches]}, times)."""
    from gaussood import GaussianScorer

    hits = {(n, e): {} for n in cfg["batch_sizes"] for e in shares}
    counts = {(n, e): [0, 0] for n in cfg["batch_sizes"] for e in shares}
    times = {n: {} for n in cfg["batch_sizes"]}
    for r in range(replicates):
        perm = rng.permutation(X_id.shape[0])
        cal = perm[:m]
        scorer.calibrate(X_id[cal])
        ref = GaussianScorer("empirical", calibration="chi2").fit(X_id[cal])
        for n in cfg["batch_sizes"]:
            for e in (shares if r < cfg["power_batches"] else [0.0]):
                k_ood = rng.binomial(n, e) if e else 0
                i = perm[m:m + n - k_ood]
                j = rng.choice(X_ood.shape[0], k_ood, replace=False)
                X = np.vstack([X_id[i], X_ood[j]])
                p = scorer.pvalue_from_scores(np.concatenate([s_id[i], s_ood[j]]))
                mmd = (X_id[cal[:cfg["mmd_reference"]]], rng) \
                    if with_mmd and r < cfg["mmd_batches"] else None
                for k, v in run_tests(scorer, ref, X, p, cfg, times[n], mmd).items():
                    hits[n, e][k] = hits[n, e].get(k, 0) + v
                counts[n, e][0] += 1
                counts[n, e][1] += mmd is not None
    return hits, counts, times


def real(cfg, root, rng):
    from gaussood import GaussianScorer, shift

    n_test, m = 10000, cfg["m_calibration"]
    split = np.random.default_rng(cfg["seed"]).permutation(n_test)
    cal_idx, pool_idx = np.sort(split[:m]), np.sort(split[m:])
    t = time.perf_counter()
    emb = embed_all(cfg, root, pool_idx)
    embed_s = time.perf_counter() - t
    Xtr, Xte = np.asarray(emb["train"]), np.asarray(emb["test"])
    scorer = GaussianScorer(random_state=cfg["seed"]).fit(Xtr)
    param = GaussianScorer("empirical", calibration="f").fit(Xtr)
    s_test = scorer.score_samples(Xte)
    out = {"embed_seconds": embed_s, "fit": f"GaussianScorer() on {Xtr.shape[0]} x "
           f"{Xtr.shape[1]} train embeddings, calibration {scorer.calibration_} "
           f"(m = {scorer.calibration_scores_.shape[0]})", "as_fitted": [], "held_out": []}
    alpha, B = cfg["alpha"], cfg["null_batches"]
    # (a) as fitted: cross-conformal on train, F law, Hotelling against the train fit
    p_conf, p_f = scorer.pvalue_from_scores(s_test), param.pvalue(Xte)
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
    s_fashion = scorer.score_samples(fashion)
    shares = [0.0] + list(cfg["ood_shares"])
    hits, counts, times = share_replicates(cfg, rng, held, Xte, s_test, fashion, s_fashion, m,
                                           shares, B, with_mmd=True)
    for n in cfg["batch_sizes"]:
        b, bm = counts[n, 0.0]
        out["held_out"].append({"n": n, "batches": b, "mmd_batches": bm,
                                **{k: v / (bm if k == "mmd" else b)
                                   for k, v in hits[n, 0.0].items()}})
        log(f"held out n={n}: {out['held_out'][-1]}")
    out["power"] = []
    for n in cfg["batch_sizes"]:
        for e in shares[1:]:
            b, bm = counts[n, e]
            out["power"].append({"n": n, "setting": f"Fashion-MNIST {100 * e:g}%",
                                 "batches": b, "mmd_batches": bm,
                                 **{k: v / (bm if k == "mmd" else b)
                                    for k, v in hits[n, e].items()}})
            log(f"power n={n}: {out['power'][-1]}")
    # covariate shift: the seed's split (its 2,000 batch rows were shifted and embedded)
    held.calibrate(Xte[cal_idx])
    ref = GaussianScorer("empirical", calibration="chi2").fit(Xte[cal_idx])
    mmd_ref = Xte[split[:cfg["mmd_reference"]]]   # split is unsorted: random rows
    for n in cfg["batch_sizes"]:
        for name in SHIFTS:
            Xs = np.asarray(emb[name])
            ps = held.pvalue(Xs)
            hit = {}
            for b in range(cfg["power_batches"]):
                idx = rng.choice(Xs.shape[0], n, replace=False)
                mmd = (mmd_ref, rng) if b < cfg["mmd_batches"] else None
                for k, v in run_tests(held, ref, Xs[idx], ps[idx], cfg, times[n], mmd).items():
                    hit[k] = hit.get(k, 0) + v
            out["power"].append({"n": n, "setting": name, "batches": cfg["power_batches"],
                                 "mmd_batches": cfg["mmd_batches"],
                                 **{k: v / (cfg["mmd_batches"] if k == "mmd" else
                                            cfg["power_batches"]) for k, v in hit.items()}})
            log(f"power n={n}: {out['power'][-1]}")
    out["ms_per_batch"] = {n: {k: 1000 * float(np.median(v)) for k, v in times[n].items()}
                           for n in cfg["batch_sizes"]}
    return out


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
    s_id, s_ood = scorer.score_samples(Xid), scorer.score_samples(Xood)
    m = 4000
    shares = [0.0, 0.02, 0.05, 0.1, 0.2]
    hits, counts, _ = share_replicates(cfg, rng, scorer, Xid, s_id, Xood, s_ood, m, shares,
                                       cfg["open_set_null"], with_mmd=False)
    rows = [{"n": n, "ood_share": e, "batches": counts[n, e][0],
             **{k: v / counts[n, e][0] for k, v in hits[n, e].items()}}
            for n in cfg["batch_sizes"] for e in shares]
    for row in rows:
        log(f"open set: {row}")
    return {"embed_seconds": embed_s, "m_calibration": m, "rows": rows,
            "fit": f"GaussianScorer() on {emb['train'].shape[0]} train rows of classes 0-5"}


def open_set_markdown(res) -> str:
    o = res["open_set"]
    L = ["# Batch shift detection, open set: CIFAR-10 classes 6-9 among classes 0-5", "",
         f"Encoder benchmarks/checkpoints/cifar10-cpu-c0to5.pt (backbone); {o['fit']}. "
         f"Per replicate, {o['m_calibration']} random ID test rows (classes 0-5) calibrate "
         "the scorer and fit Hotelling's reference; the batch takes other ID test rows and "
         f"a Binomial(n, share) number of classes 6-9 test rows. alpha = "
         f"{res['config']['alpha']:g}; wall time {res['wall_seconds'] / 60:.1f} min. "
         "Rejection rate in % (share 0: false alarms).", "",
         "| n | classes 6-9 share | batches | KS | Fisher | HC | Hotelling |",
         "|---|---|---|---|---|---|---|"]
    for r in o["rows"]:
        L.append(f"| {r['n']} | {100 * r['ood_share']:g}% | {r['batches']} | "
                 + " | ".join(pct(r[k]) for k in TESTS) + " |")
    return "\n".join(L)


# -------------------------------------------------------------- reporting
def pct(x):
    return f"{100 * x:.1f}"


def markdown(res) -> str:
    cfg, syn, real_ = res["config"], res["synthetic"], res["real"]
    L = [f"# Batch shift detection (gaussood.shift), alpha = {cfg['alpha']:g}", "",
         f"Wall time {res['wall_seconds'] / 60:.1f} min on one core "
         f"({res['environment'].get('cpu', 'cpu')}); seed {cfg['seed']}. Rates in %. "
         "Binomial sd of a rate near 5%: 0.5 points at 2,000 batches, 0.7 at 1,000.", "",
         "## 1. Synthetic: false alarms of the uniformity tests on conformal p-values",
         "", "A fresh calibration set of m scores per batch (the marginal guarantee). "
         "'naive': the same p-values tested as independent U(0, 1) draws.", "",
         "| m | n | KS | Fisher | HC | KS naive | Fisher naive |", "|---|---|---|---|---|---|---|"]
    for r in syn["marginal"]:
        L.append(f"| {r['m']} | {r['n']} | {pct(r['ks'])} | {pct(r['fisher'])} | "
                 f"{pct(r['hc'])} | {pct(r['ks naive'])} | {pct(r['fisher naive'])} |")
    L += ["", "One fixed calibration set, many batches (the rate a deployment sees): "
          "min / median / max over the sets.", "",
          "| m | n | sets x batches | KS | Fisher | HC |", "|---|---|---|---|---|---|"]
    for r in syn["conditional"]:
        cell = [f"{pct(min(r[k]))} / {pct(float(np.median(r[k])))} / {pct(max(r[k]))}"
                for k in ("ks", "fisher", "hc")]
        L.append(f"| {r['m']} | {r['n']} | {r['sets']} x {r['batches_per_set']} | "
                 + " | ".join(cell) + " |")
    L += ["", "Parametric GaussianScorer (empirical covariance, exact F law) on Gaussian "
          "rows, one fit:", "", "| n_fit | d | n | KS | Fisher | HC | Hotelling |",
          "|---|---|---|---|---|---|---|"]
    for r in syn["parametric"]:
        L.append(f"| {r['n_fit']} | {r['d']} | {r['n']} | " +
                 " | ".join(pct(r[k]) for k in TESTS) + " |")
    L += ["", f"## 2. CIFAR-10 ID test batches ({cfg['encoder']}, backbone 256-d)", "",
          real_["fit"] + ".", "", "(a) As fitted: calibration from the train split, ID "
          "batches from the test split.", ""]
    keys = [k for k in real_["as_fitted"][0] if k not in ("n", "batches")]
    L += ["| n | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in real_["as_fitted"]:
        L.append(f"| {r['n']} | " + " | ".join(pct(r[k]) for k in keys) + " |")
    L += ["", f"(b) Held out: per replicate, {cfg['m_calibration']} random test rows "
          "calibrate (split conformal; Hotelling's reference is a GaussianScorer fit on "
          "them), the batch comes from the other rows.", "",
          "| n | batches | KS | Fisher | HC | Hotelling | MMD (batches) |",
          "|---|---|---|---|---|---|---|"]
    for r in real_["held_out"]:
        L.append(f"| {r['n']} | {r['batches']} | " + " | ".join(pct(r[k]) for k in TESTS)
                 + f" | {pct(r['mmd'])} ({r['mmd_batches']}) |")
    L += ["", "## 3. Power (held-out calibration; rejection rate in %)", "",
          f"{cfg['power_batches']} batches per cell ({cfg['mmd_batches']} for the MMD peer: "
          f"RBF, median heuristic, {cfg['mmd_permutations']} permutations, "
          f"{cfg['mmd_reference']} reference rows).", ""]
    for n in cfg["batch_sizes"]:
        L += [f"Batches of {n}:", "", "| setting | KS | Fisher | HC | Hotelling | MMD |",
              "|---|---|---|---|---|---|"]
        for r in real_["power"]:
            if r["n"] == n:
                L.append(f"| {r['setting']} | " + " | ".join(
                    pct(r[k]) for k in (*TESTS, "mmd")) + " |")
        L.append("")
    L += ["Median time per batch (ms):", "", "| n | " + " | ".join((*TESTS, "mmd")) + " |",
          "|---|---|---|---|---|---|"]
    for n, t in real_["ms_per_batch"].items():
        L.append(f"| {n} | " + " | ".join(f"{t[k]:.2f}" for k in (*TESTS, "mmd")) + " |")
    return "\n".join(L)


def figure(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, power = res["config"], res["real"]["power"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, n in zip(axes[:2], cfg["batch_sizes"]):
        rows = [r for r in power if r["n"] == n and r["setting"].startswith("Fashion")]
        x = [100 * e for e in cfg["ood_shares"]]
        for k in (*TESTS, "mmd"):
            ax.plot(x, [100 * r[k] for r in rows], marker="o", label=k)
        ax.set_xscale("log")
        ax.axhline(100 * cfg["alpha"], color="gray", lw=0.8, ls="--")
        ax.set(title=f"Fashion-MNIST rows in CIFAR-10 batches of {n}",
               xlabel="OOD share of the batch (%)", ylabel="alarms (%)")
        ax.legend(fontsize=7)
    names = list(SHIFTS)
    width = 0.16
    for i, k in enumerate((*TESTS, "mmd")):
        vals = [100 * next(r[k] for r in power if r["n"] == max(cfg["batch_sizes"])
                           and r["setting"] == s) for s in names]
        axes[2].bar(np.arange(len(names)) + (i - 2) * width, vals, width, label=k)
    axes[2].set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=7)
    axes[2].set(title=f"covariate shift, batches of {max(cfg['batch_sizes'])}",
                ylabel="alarms (%)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.environ.get("GAUSSOOD_DATA",
                                                     str(REPO.parent / "shared" / "data")),
                    help="data folder with the CIFAR-10 archive")
    ap.add_argument("--quick", action="store_true", help="few batches (a smoke run)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--open-set", action="store_true",
                    help="only the open-set part (cifar10-cpu-c0to5.pt, classes 6-9 as OOD); "
                         "writes shift_open_set.*")
    args = ap.parse_args(argv)
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(null_batches=40, power_batches=20, mmd_batches=3, synthetic_batches=40,
                   conditional_sets=2, conditional_batches=20, synthetic_m=[1000],
                   open_set_null=30)
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
