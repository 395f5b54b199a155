"""Does InfoNCE make embeddings Gaussian? A reproduction of the paper's evidence, and
what it means for gaussood's p-values (issue 4).

Six parts, all written to benchmarks/results/gaussianity.{json,md} (+ figures):

1. synthetic: inputs from Laplace, Gaussian-mixture and sparse-binary laws; the same
   MLP trained with InfoNCE (two noisy views) or with cross-entropy (labels from the
   mixture component, or from a fixed random linear teacher). Diagnostics of the
   encoder output on held-out inputs.
2. cifar10: the 89-epoch contrastive encoder (cifar10-cpu.pt; the bench's encoder when
   this study ran, now cifar10-cpu-2x.pt) and the first
   one (cifar10-small.pt, 4 epochs) against the same architecture trained with
   cross-entropy for 4 epochs (all in benchmarks/checkpoints), on CIFAR-10 test
   images, backbone and head features.
3. calibration: false-alarm rate of GaussianScorer thresholds (chi-square, Hotelling
   F, conformal) and the norm-shell law at alpha = 0.01, 0.05, 0.10 on held-out
   CIFAR-10 test embeddings of the shipped encoder, for backbone/head features, raw
   or L2-normalised.
5. fashion: Fashion-MNIST, where the CPU trains to the k-NN plateau: the plain
   InfoNCE encoder, its twin with the paper's regulariser, the same architecture
   trained with cross-entropy, and the untrained (random-init) network, on
   Fashion-MNIST test images, each beside an exact-Gaussian sample of the same n, d
   and covariance (the paper's contrast, in a setting where training converges).
6. twin: CIFAR-10, the shipped recipe for 8 epochs, plain and with the paper's
   regulariser (norm + entropy terms), same seed and views, each beside the
   exact-Gaussian reference (the encoders come from make train-twin; the part is
   skipped with a message when they are missing).
4. predicts: diagnostics across encoders and epochs (every CIFAR-10 encoder in
   benchmarks/checkpoints, plus per-epoch snapshots where a run kept them with
   train_encoder.py --snapshots) against the OOD AUROC of GaussianScorer (CIFAR-10
   test vs Fashion-MNIST test), with Spearman correlations.

Run: python benchmarks/gaussianity.py [--parts synthetic cifar10 calibration predicts
     fashion twin] [--quick]. Needs the CIFAR-10 archive (GAUSSOOD_DATA) for parts 2-4
     and 6, and Fashion-MNIST (Debian package dataset-fashion-mnist) for parts 4-5.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results

from gaussood import GaussianScorer, NormShellScorer, auroc
from gaussood.deep import InfoNCELoss, extract_embeddings, load_dataset
from gaussood.diagnostics import diagnose

HERE = Path(__file__).resolve().parent
CKPT = HERE / "checkpoints"
RUNS = Path.home() / ".cache" / "gaussood" / "runs"
PAPER = {  # Betser et al., ICLR 2026 (numbers quoted in the issue)
    "synthetic_infonce": "norm CV 0.08-0.09; 97-100% of coordinates pass",
    "cifar_contrastive": {"norm_cv": 0.09, "ad_pass": 0.961, "dp_pass": 0.945},
    "cifar_supervised": {"norm_cv": 0.5, "ad_pass": 0.062, "dp_pass": 0.039},
}
KEYS = ("norm_cv_uncentered", "norm_cv_centered", "ad_pass_coordinates", "dp_pass_coordinates",
        "ad_pass_projections", "ad_pass_whitened", "mahalanobis_ks", "effective_rank")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(report):
    out = {k: getattr(report, k) for k in KEYS}
    out["reference"] = {k: report.reference[k] for k in KEYS} if report.reference else None
    return out


# ------------------------------------------------------------------ 1. synthetic
def synthetic_inputs(law, n, dim, rng):
    if law == "laplace":
        return rng.laplace(size=(n, dim)), None
    if law == "gmm":
        means = 0.5 * rng.normal(size=(10, dim))  # means about 4 sd apart in 32-d
        y = rng.integers(0, 10, n)
        return means[y] + rng.normal(size=(n, dim)), y
    if law == "sparse-binary":
        return (rng.random((n, dim)) < 0.1).astype(np.float64), None
    raise ValueError(law)


def view(x, law, gen):
    """A random view: bit flips for binary inputs (stays binary), else additive noise."""
    if law == "sparse-binary":
        flip = torch.rand(x.shape, generator=gen) < 0.05
        return torch.where(flip, 1.0 - x, x)
    return x + 0.3 * x.std(dim=0, keepdim=True) * torch.randn(x.shape, generator=gen)


def mlp(dim_in, width, dim_out):
    return torch.nn.Sequential(torch.nn.Linear(dim_in, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, dim_out))


def train_synthetic(law, objective, cfg, seed, arch="mlp", regularised=False):
    rng = np.random.default_rng(seed)
    X, y = synthetic_inputs(law, cfg["n_train"] + cfg["n_eval"], cfg["dim_in"], rng)
    if y is None:  # labels for the supervised baseline: a fixed random linear teacher
        teacher = rng.normal(size=(cfg["dim_in"], 10))
        y = np.argmax((X - X.mean(0)) @ teacher, axis=1)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    Xtr, ytr, Xev = X[:cfg["n_train"]], y[:cfg["n_train"]], X[cfg["n_train"]:]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = (mlp(cfg["dim_in"], cfg["width"], cfg["dim_out"]) if arch == "mlp"
           else torch.nn.Linear(cfg["dim_in"], cfg["dim_out"]))
    head = torch.nn.Linear(cfg["dim_out"], 10)
    params = list(net.parameters()) + (list(head.parameters()) if objective == "ce" else [])
    opt = torch.optim.Adam(params, lr=cfg["lr"])
    # route 2: beta (lambda E||h||^2 - H(h)); lambda = 0.5 makes N(0, I) the optimum
    infonce = InfoNCELoss(temperature=cfg["temperature"],
                          norm_weight=cfg["beta"] * 0.5 if regularised else 0.0,
                          entropy_weight=cfg["beta"] if regularised else 0.0)
    ce = torch.nn.CrossEntropyLoss()
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(cfg["n_train"], generator=gen)
        for start in range(0, cfg["n_train"] - cfg["batch"] + 1, cfg["batch"]):
            idx = perm[start:start + cfg["batch"]]
            xb = Xtr[idx]
            if objective == "infonce":
                loss = infonce(net(view(xb, law, gen)), net(view(xb, law, gen)))
            else:
                loss = ce(head(net(view(xb, law, gen))), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(Xev).numpy().astype(np.float64), float(loss)


def part_synthetic(args):
    cfg = {"dim_in": 32, "width": 256, "dim_out": 64, "n_train": 20_000, "n_eval": 5_000,
           "epochs": 30, "batch": 512, "lr": 1e-3, "temperature": 0.5, "beta": 0.01}
    if args.quick:
        cfg.update(n_train=4_000, n_eval=2_000, epochs=5)
    rows = []
    for law in ("laplace", "gmm", "sparse-binary"):
        for arch, objective in (("mlp", "infonce"), ("mlp", "infonce+reg"), ("mlp", "ce"),
                                ("linear", "infonce")):
            t0 = time.perf_counter()
            emb, loss = train_synthetic(law, objective.split("+")[0], cfg, args.seed, arch,
                                        regularised=objective.endswith("+reg"))
            rep = diagnose(emb, max_samples=cfg["n_eval"], seed=args.seed)
            rows.append({"law": law, "encoder": arch, "objective": objective, "final_loss": loss,
                         "seconds": time.perf_counter() - t0, **summary(rep)})
            log(f"synthetic {law} {arch} {objective}: CV {rep.norm_cv_uncentered:.3f}, AD "
                f"{100 * rep.ad_pass_coordinates:.1f}%, DP {100 * rep.dp_pass_coordinates:.1f}%")
    # the inputs themselves, for reference: how Gaussian is what goes in?
    for law in ("laplace", "gmm", "sparse-binary"):
        X, _ = synthetic_inputs(law, cfg["n_eval"], cfg["dim_in"], np.random.default_rng(1))
        rep = diagnose(X, max_samples=cfg["n_eval"], seed=args.seed)
        rows.append({"law": law, "encoder": "none (inputs)", "objective": "-",
                     "final_loss": None, "seconds": 0.0, **summary(rep)})
    return {"config": cfg, "rows": rows}


# ------------------------------------------------------------------- 2. cifar10
def cifar(split, n, seed, classes=None):
    return load_dataset("cifar10", split, root=None, n=n, seed=seed, classes=classes)


def embed(encoder, data, layer):
    return extract_embeddings(encoder, data, layer=layer, progress=False).astype(np.float64)


def l2(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def part_cifar10(args, figures):
    test = cifar("test", args.n_eval, args.seed)
    encoders = {"contrastive (InfoNCE)": CKPT / "cifar10-cpu.pt",
                "contrastive, first (4 ep.)": CKPT / "cifar10-small.pt",
                "supervised (cross-entropy, 4 ep.)": CKPT / "cifar10-small-supervised.pt"}
    tags = dict(zip(encoders, ("contrastive", "contrastive_4ep", "supervised")))
    rows = []
    for label, path in encoders.items():
        prov = json.loads(path.with_suffix(".json").read_text())
        for layer in ("backbone", "head"):
            rep = diagnose(embed(path, test, layer), max_samples=args.n_eval, seed=args.seed)
            rows.append({"encoder": label, "file": path.name, "layer": layer,
                         "epochs": prov["epochs"], "knn_top1": prov["knn_top1"],
                         "n": rep.n, "d": rep.d, **summary(rep)})
            if layer == "backbone":
                figures += [str(p.relative_to(HERE)) for p in rep.save_figures(
                    HERE / "results", prefix=f"gaussianity_{tags[label]}")]
            log(f"cifar10 {label} {layer}: CV {rep.norm_cv_uncentered:.3f}, AD "
                f"{100 * rep.ad_pass_coordinates:.1f}%, DP {100 * rep.dp_pass_coordinates:.1f}%")
    # pass shares depend on n: the same embeddings diagnosed on growing subsamples
    by_n = []
    for layer in ("backbone", "head"):
        X = embed(encoders["contrastive (InfoNCE)"], test, layer)
        for n in (200, 1000, min(5000, X.shape[0])):
            rep = diagnose(X, max_samples=n, seed=args.seed)
            by_n.append({"layer": layer, "n": rep.n, "ad_pass_coordinates": rep.ad_pass_coordinates,
                         "ad_pass_projections": rep.ad_pass_projections,
                         "reference_ad_pass_coordinates": rep.reference["ad_pass_coordinates"]})
    return {"data": test.source, "rows": rows, "pass_share_by_n": by_n}


# --------------------------------------------------------------- 3. calibration
def part_calibration(args):
    train = cifar("train", args.n_fit, args.seed)
    test = cifar("test", None, args.seed)
    path = CKPT / "cifar10-cpu.pt"
    alphas = (0.01, 0.05, 0.10)
    rows = []
    for layer in ("backbone", "head"):
        Xtr_raw, Xte_raw = embed(path, train, layer), embed(path, test, layer)
        for normalised in (False, True):
            Xtr, Xte = (l2(Xtr_raw), l2(Xte_raw)) if normalised else (Xtr_raw, Xte_raw)
            methods = {
                "chi2 (empirical cov.)": lambda a: GaussianScorer(
                    covariance="empirical", calibration="chi2", alpha=a),
                "Hotelling F (empirical cov.)": lambda a: GaussianScorer(
                    covariance="empirical", calibration="f", alpha=a),
                "chi2 (Ledoit-Wolf)": lambda a: GaussianScorer(calibration="chi2", alpha=a),
                "conformal (Ledoit-Wolf)": lambda a: GaussianScorer(
                    calibration="conformal", alpha=a, random_state=args.seed),
                "norm-shell law": lambda a: NormShellScorer(calibration="shell", alpha=a),
            }
            for name, make in methods.items():
                if normalised and name == "norm-shell law":
                    continue  # every norm is 1: the shell says nothing
                far = {}
                for a in alphas:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        scorer = make(a).fit(Xtr)
                    far[str(a)] = float(np.mean(scorer.predict(Xte) == -1))
                rows.append({"layer": layer, "normalised": normalised, "method": name,
                             "far": far, "max_ratio_error": max(
                                 abs(far[str(a)] / a - 1) for a in alphas)})
            log(f"calibration {layer} normalised={normalised} done")
    return {"fit": train.source, "test": test.source, "alphas": alphas, "rows": rows}


# ------------------------------------------------------------------- 5. fashion
FASHION = {"contrastive (InfoNCE)": "fashion-mnist-cpu",
           "contrastive + regulariser": "fashion-mnist-cpu-regularised",
           "supervised (cross-entropy)": "fashion-mnist-cpu-supervised"}


def plateau(history):
    """k-NN points gained over the last quarter of the steps (the plateau test: < 0.5)."""
    pts = [(h["step"], h["knn_top1"]) for h in history if h["knn_top1"] is not None]
    if len(pts) < 2:
        return None
    last = pts[-1]
    before = [p for p in pts if p[0] <= 0.75 * last[0]]
    return None if not before else 100 * (last[1] - before[-1][1])


def part_fashion(args):
    from gaussood.deep import save_encoder
    from gaussood.deep.models import Encoder

    test = load_dataset("fashion-mnist", "test", n=args.n_eval, seed=args.seed)
    encoders = {label: CKPT / f"{name}.pt" for label, name in FASHION.items()}
    missing = {label: str(p) for label, p in encoders.items() if not p.is_file()}
    if len(missing) == len(encoders):
        raise SystemExit("gaussianity: no Fashion-MNIST encoder file; train them with "
                         "make train-fashion (see docs/reproduce.md)")
    encoders = {label: p for label, p in encoders.items() if label not in missing}
    torch.manual_seed(args.seed)
    untrained = RUNS / f"untrained-small-seed{args.seed}.pt"
    untrained.parent.mkdir(parents=True, exist_ok=True)
    save_encoder(Encoder("small").eval(), untrained)
    encoders["untrained (random init)"] = untrained
    return {"data": test.source, "rows": diagnose_encoders(args, test, encoders, "fashion"),
            "missing": missing}


def diagnose_encoders(args, test, encoders, part):
    """Each encoder's backbone and head features on ``test``, beside the exact-Gaussian
    reference of the same n, d and covariance; k-NN and plateau gain from its files."""
    rows = []
    for label, path in encoders.items():
        prov_path = path.with_suffix(".json")
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        results = HERE / "results" / f"{path.stem}.json"
        hist = json.loads(results.read_text())["history"] if results.is_file() else []
        for layer in ("backbone", "head"):
            rep = diagnose(embed(path, test, layer), max_samples=args.n_eval, seed=args.seed)
            rows.append({"encoder": label, "file": path.name, "layer": layer,
                         "knn_top1": prov.get("knn_top1"), "plateau_gain": plateau(hist),
                         "n": rep.n, "d": rep.d, "verdict": rep.verdict, **summary(rep)})
            log(f"{part} {label} {layer}: CV {rep.norm_cv_uncentered:.3f}, AD coords "
                f"{100 * rep.ad_pass_coordinates:.1f}% (ref "
                f"{100 * rep.reference['ad_pass_coordinates']:.1f}%), projections "
                f"{100 * rep.ad_pass_projections:.1f}% (ref "
                f"{100 * rep.reference['ad_pass_projections']:.1f}%)")
    return rows


# --------------------------------------------------------------------- 6. twin
TWIN = {"contrastive (InfoNCE)": "cifar10-twin-plain",
        "contrastive + regulariser": "cifar10-twin-reg"}
TWIN_RECIPE = ("python benchmarks/train_encoder.py --threads 1 --model small --resolution "
               "16:0.75,32 --temperature 0.2 --epochs 8 --knn-every 4")


def part_twin(args):
    encoders = {label: CKPT / f"{name}.pt" for label, name in TWIN.items()}
    missing = {label: str(p) for label, p in encoders.items() if not p.is_file()}
    if missing:  # the other parts still run and are written
        log(f"twin: skipped, encoder files missing ({', '.join(missing.values())}); "
            "make them with make train-twin")
        return {"data": None, "recipe": TWIN_RECIPE, "rows": [], "missing": missing}
    test = cifar("test", args.n_eval, args.seed)
    return {"data": test.source, "recipe": TWIN_RECIPE, "missing": {},
            "rows": diagnose_encoders(args, test, encoders, "twin")}


# ------------------------------------------------------------------ 4. predicts
PREDICTS = {"contrastive (InfoNCE)": "cifar10-cpu",
            "contrastive, classes 0-5": "cifar10-cpu-c0to5",
            "contrastive, first (4 ep.)": "cifar10-small",
            "contrastive, first, classes 0-5 (4 ep.)": "cifar10-small-c0to5",
            "supervised (4 ep.)": "cifar10-small-supervised"}
SNAPSHOTS = ((CKPT / "runs" / "cifar10-cpu-c0to5", "contrastive, classes 0-5"),  # in training
             (RUNS / "cifar10-cpu-c0to5", "contrastive, classes 0-5"),  # kept after it
             (RUNS / "cifar10-small-c0to5", "contrastive, first, classes 0-5"),
             (RUNS / "cifar10-small-supervised", "supervised"))


def part_predicts(args):
    from scipy import stats

    train = cifar("train", args.n_fit, args.seed)
    test = cifar("test", args.n_eval, args.seed)
    fashion = load_dataset("fashion-mnist", "test", n=args.n_eval, seed=args.seed,
                           jpeg_quality=75)
    encoders = {label: CKPT / f"{name}.pt" for label, name in PREDICTS.items()
                if (CKPT / f"{name}.pt").is_file()}
    # per-epoch snapshots, where a run kept them (train_encoder.py --snapshots)
    for folder, tag in SNAPSHOTS:
        for snap in sorted(folder.glob("epoch*.pt"), key=lambda q: int(q.stem[5:])):
            encoders[f"{tag}, epoch {snap.stem[5:]}"] = snap
    rows = []
    for layer in ("backbone", "head"):
        for label, path in encoders.items():
            Xtr, Xte, Xood = (embed(path, d, layer) for d in (train, test, fashion))
            rep = diagnose(Xte, max_samples=args.n_eval, seed=args.seed)
            scorer = GaussianScorer(random_state=args.seed).fit(Xtr)
            rows.append({"encoder": label, "layer": layer, "file": str(path),
                         "auroc_fashion": auroc(scorer.score_samples(Xte),
                                                scorer.score_samples(Xood)), **summary(rep)})
            log(f"predicts {label} {layer}: AUROC {rows[-1]['auroc_fashion']:.4f}, AD "
                f"{100 * rep.ad_pass_coordinates:.1f}%")
    corr = {}
    for layer in ("backbone", "head"):
        sub = [r for r in rows if r["layer"] == layer]
        if len(sub) < 4:
            continue
        au = [r["auroc_fashion"] for r in sub]
        corr[layer] = {}
        for k in KEYS:
            values = [r[k] for r in sub]
            if np.ptp(values) == 0:
                corr[layer][k] = {"spearman": None, "p": None,
                                  "note": f"constant ({values[0]:.3g}) across encoders"}
                continue
            rho, p = stats.spearmanr(values, au)
            corr[layer][k] = {"spearman": float(rho), "p": float(p)}
    return {"fit": train.source, "test": test.source, "ood": fashion.source, "rows": rows,
            "spearman_vs_auroc": corr}


# --------------------------------------------------------------------- output
def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(res, args):
    L = ["## Gaussianity of embeddings: reproduction of Betser et al. (ICLR 2026)", "",
         "Tests at 5%. AD = Anderson-Darling, DP = D'Agostino-Pearson; pass share = share of "
         "coordinates the test accepts. The reference column is an exact Gaussian sample with "
         "the same n, d, mean and covariance: under exact Gaussianity about 95% pass, and "
         "pass shares fall as n grows for any fixed departure.", ""]
    if "synthetic" in res:
        s = res["synthetic"]
        c = s["config"]
        L += ["### 1. Synthetic inputs, MLP encoder", "",
              f"MLP {c['dim_in']}-{c['width']}-{c['width']}-{c['dim_out']} (ReLU), Adam lr "
              f"{c['lr']}, {c['epochs']} epochs, batch {c['batch']}, {c['n_train']} training "
              f"inputs; diagnostics on {c['n_eval']} held-out inputs (output layer). Views: "
              "additive noise (0.3 x feature sd), bit flips (5%) for binary inputs. "
              "infonce+reg adds the paper's regulariser beta (lambda E||h||^2 - H(h)) with "
              f"beta = {c['beta']}, lambda = 0.5 (H: batch nearest-neighbour entropy). Paper "
              f"(InfoNCE): {PAPER['synthetic_infonce']}.", "",
              "| input law | encoder | objective | norm CV | AD pass (%) | DP pass (%) | AD pass, "
              "projections (%) | Mahalanobis KS | eff. rank |", "|---" * 9 + "|"]
        for r in s["rows"]:
            L.append(f"| {r['law']} | {r['encoder']} | {r['objective']} | {r['norm_cv_uncentered']:.3f} | "
                     f"{pct(r['ad_pass_coordinates'])} | {pct(r['dp_pass_coordinates'])} | "
                     f"{pct(r['ad_pass_projections'])} | {r['mahalanobis_ks']:.3f} | "
                     f"{r['effective_rank']:.1f} |")
        L.append("")
    if "cifar10" in res:
        c = res["cifar10"]
        L += ["### 2. CIFAR-10: contrastive vs supervised, same architecture", "",
              f"Data: {c['data']}.", "",
              "| encoder | layer | epochs | kNN top-1 (%) | n | d | norm CV | AD pass (%) | "
              "DP pass (%) | AD pass, projections (%) | AD pass, whitened (%) | "
              "Mahalanobis KS | eff. rank |", "|---" * 13 + "|"]
        for r in c["rows"]:
            L.append(f"| {r['encoder']} | {r['layer']} | {r['epochs']} | "
                     f"{100 * r['knn_top1']:.1f} | {r['n']} | {r['d']} | "
                     f"{r['norm_cv_uncentered']:.3f} | {pct(r['ad_pass_coordinates'])} | "
                     f"{pct(r['dp_pass_coordinates'])} | {pct(r['ad_pass_projections'])} | "
                     f"{pct(r['ad_pass_whitened'])} | {r['mahalanobis_ks']:.3f} | "
                     f"{r['effective_rank']:.1f} |")
        p = PAPER
        L += [f"| paper: contrastive ResNet-18 | - | - | - | - | - | "
              f"{p['cifar_contrastive']['norm_cv']} | {pct(p['cifar_contrastive']['ad_pass'])} | "
              f"{pct(p['cifar_contrastive']['dp_pass'])} | - | - | - | - |",
              f"| paper: supervised ResNet-18 | - | - | - | - | - | "
              f"{p['cifar_supervised']['norm_cv']} | {pct(p['cifar_supervised']['ad_pass'])} | "
              f"{pct(p['cifar_supervised']['dp_pass'])} | - | - | - | - |", "",
              "Pass shares against n (the shipped contrastive encoder, random subsamples of the "
              "same test embeddings):", "",
              "| layer | n | AD pass, coordinates (%) | AD pass, projections (%) | "
              "exact Gaussian reference (%) |", "|---|---|---|---|---|",
              *[f"| {r['layer']} | {r['n']} | {pct(r['ad_pass_coordinates'])} | "
                f"{pct(r['ad_pass_projections'])} | {pct(r['reference_ad_pass_coordinates'])} |"
                for r in c.get("pass_share_by_n", [])], "",
              "Norm CV is of the uncentred features, as in the paper. Figures (backbone): "
              "`gaussianity_contrastive_{norms,qq,ad}.png` (shipped), "
              "`gaussianity_contrastive_4ep_{norms,qq,ad}.png`, "
              "`gaussianity_supervised_{norms,qq,ad}.png`.", ""]
    for part, title in (("fashion", "### 5. Fashion-MNIST, trained to the plateau"),
                        ("twin", "### 6. CIFAR-10: the regulariser twin, same recipe and "
                                 "budget (8 epochs)")):
        if part not in res:
            continue
        c = res[part]
        L += [title, "", *([f"Both: `{c['recipe']}`; the twin adds `--norm-weight 0.005 "
                            "--entropy-weight 0.01`.", ""] if "recipe" in c else []),
              f"Diagnosed: {c['data']}. Each value beside the exact-Gaussian reference of "
              "the same n, d and covariance (in brackets). k-NN: weighted top-1, full "
              "protocol; plateau: k-NN points gained over the last quarter of the run "
              "(< 0.5 = converged).", "",
              "| encoder | layer | k-NN (%) | plateau gain | norm CV | AD pass, coordinates (%) "
              "| DP pass, coordinates (%) | AD pass, projections (%) | Mahalanobis KS |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            ref = r["reference"]
            knn = "-" if r["knn_top1"] is None else f"{100 * r['knn_top1']:.1f}"
            gain = "-" if r["plateau_gain"] is None else f"{r['plateau_gain']:+.2f}"
            L.append(f"| {r['encoder']} | {r['layer']} | {knn} | {gain} | "
                     f"{r['norm_cv_uncentered']:.3f} ({ref['norm_cv_uncentered']:.3f}) | "
                     f"{pct(r['ad_pass_coordinates'])} ({pct(ref['ad_pass_coordinates'])}) | "
                     f"{pct(r['dp_pass_coordinates'])} ({pct(ref['dp_pass_coordinates'])}) | "
                     f"{pct(r['ad_pass_projections'])} ({pct(ref['ad_pass_projections'])}) | "
                     f"{r['mahalanobis_ks']:.3f} ({ref['mahalanobis_ks']:.3f}) |")
        L += [f"Not run (encoder file missing): {label} (`{path}`)."
              for label, path in (c.get("missing") or {}).items()]
        L.append("")
    if "calibration" in res:
        c = res["calibration"]
        L += ["### 3. Do Gaussian p-values hold on real embeddings?", "",
              f"Fit: {c['fit']}. False alarms counted on {c['test']} (held out). Shown: share "
              "flagged (%) at each alpha; 'worst ratio error' = max over alphas of "
              "|rate / alpha - 1|.", "",
              "| layer | L2-normalised | threshold | alpha 1% | alpha 5% | alpha 10% | "
              "worst ratio error |", "|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            f = r["far"]
            L.append(f"| {r['layer']} | {'yes' if r['normalised'] else 'no'} | {r['method']} | "
                     f"{pct(f['0.01'])} | {pct(f['0.05'])} | {pct(f['0.1'])} | "
                     f"{r['max_ratio_error']:.2f} |")
        L.append("")
    if "predicts" in res:
        c = res["predicts"]
        L += ["### 4. Does Gaussianity predict OOD quality?", "",
              f"GaussianScorer (Ledoit-Wolf) fitted on the features of {c['fit']}; "
              f"diagnostics on {c['test']}; AUROC against {c['ood']}.", "",
              "| encoder | layer | AUROC vs Fashion-MNIST (%) | norm CV | AD pass (%) | "
              "AD pass, projections (%) | Mahalanobis KS | eff. rank |",
              "|---|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            L.append(f"| {r['encoder']} | {r['layer']} | {100 * r['auroc_fashion']:.2f} | "
                     f"{r['norm_cv_uncentered']:.3f} | {pct(r['ad_pass_coordinates'])} | "
                     f"{pct(r['ad_pass_projections'])} | {r['mahalanobis_ks']:.3f} | "
                     f"{r['effective_rank']:.1f} |")
        if c["spearman_vs_auroc"]:
            L += ["", "Spearman correlation of each diagnostic with the AUROC across the "
                  "encoders, per layer:", "", "| layer | diagnostic | rho | p |",
                  "|---|---|---|---|"]
            for layer, d in c["spearman_vs_auroc"].items():
                for k, v in d.items():
                    L.append(f"| {layer} | {k} | " + (f"{v['spearman']:+.2f} | {v['p']:.3f} |"
                             if v["spearman"] is not None else f"- | {v['note']} |"))
        L.append("")
    L.append(f"Command: `python benchmarks/gaussianity.py {' '.join(sys.argv[1:])}`; "
             f"seed {args.seed}; wall time {res['wall_seconds'] / 60:.1f} min.")
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["synthetic", "cifar10", "calibration",
                                                  "predicts", "fashion", "twin"],
                   choices=["synthetic", "cifar10", "calibration", "predicts", "fashion",
                            "twin"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-fit", type=int, default=20_000, help="CIFAR-10 train images to fit on")
    p.add_argument("--n-eval", type=int, default=5_000, help="held-out images diagnosed")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n_fit, args.n_eval = 3_000, 1_000
    start = time.perf_counter()
    res, figures = {}, []
    for part in args.parts:
        if part == "synthetic":
            res[part] = part_synthetic(args)
        elif part == "cifar10":
            res[part] = part_cifar10(args, figures)
        elif part == "calibration":
            res[part] = part_calibration(args)
        elif part == "fashion":
            res[part] = part_fashion(args)
        elif part == "twin":
            res[part] = part_twin(args)
        else:
            res[part] = part_predicts(args)
    res["wall_seconds"] = time.perf_counter() - start
    res.update({"config": vars(args), "figures": figures, "environment": environment(),
                "paper": PAPER})
    name = args.name or ("gaussianity_quick" if args.quick else "gaussianity")
    write_results(name, res, markdown(res, args))


if __name__ == "__main__":
    main()
