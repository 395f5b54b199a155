"""The CIFAR-10 OOD benchmark: encoder -> embeddings -> every scorer and peer -> metrics.

Run as ``gaussood bench`` or ``python benchmarks/cifar10_ood.py`` (same options).

Two settings:
  * cifar10: the encoder trained on all of CIFAR-10; OOD sets are whatever is
    found locally among SVHN, CIFAR-100, Fashion-MNIST, MNIST, plus two noise
    sets (uniform, Gaussian). SVHN and CIFAR-100 rows appear only when their
    files were read.
  * open-set: an encoder trained on CIFAR-10 classes 0-5 only; ID = classes
    0-5, near-OOD = test images of classes 6-9.
Every image (ID and OOD) goes through JPEG q75, the compression of the CIFAR-10
archive, so no detector can key on compression artefacts. Each seed draws new
random subsets: the ID images the scorers are fitted on, the held-out ID test
images and the OOD images (and the noise); the encoders are fixed (one
training run each), which the report states.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .._env import environment

REPO = Path(__file__).resolve().parents[2]
# In a clone of the repository the shipped encoders and committed results live in
# benchmarks/; an installed package trains into (and writes to) user folders instead.
_IN_REPO = (REPO / "benchmarks" / "checkpoints").is_dir()
CHECKPOINTS = (REPO / "benchmarks" / "checkpoints" if _IN_REPO
               else Path.home() / ".cache" / "gaussood" / "encoders")
RESULTS = REPO / "benchmarks" / "results" if _IN_REPO else Path("gaussood-results")

# name -> (load_dataset name, split, near/far, label)
OOD_SETS = {
    "cifar100": ("cifar100", "test", "near", "CIFAR-100 test"),
    "svhn": ("svhn", "test", "far", "SVHN test"),
    "fashion-mnist": ("fashion-mnist", "test", "far", "Fashion-MNIST test"),
    "mnist": ("mnist", "test", "far", "MNIST test"),
    "uniform-noise": ("uniform-noise", "test", "far", "uniform noise"),
    "gaussian-noise": ("gaussian-noise", "test", "far", "Gaussian noise"),
}
OPEN_SET_NAME = "cifar10-classes-6-9"
SCORERS = ("Gaussian (pooled)", "Gaussian (class-conditional)", "Gaussian (10 clusters)",
           "Norm shell", "kNN (k=50, cosine)", "kNN (k=50, Euclidean)", "Gaussian + shell (Fisher)")
PEERS = ("pytorch-ood Mahalanobis", "pytorch-ood KNN (k=50)", "sklearn EllipticEnvelope",
         "sklearn LOF (novelty)")
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id_positive", "fpr95_ood_positive")
LOWER_IS_BETTER = {"fpr95_id_positive", "fpr95_ood_positive", "far_error"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="gaussood bench", description="CIFAR-10 OOD benchmark: every gaussood scorer and "
        "its peers on the same embeddings; prints a Markdown table and writes JSON + figure.")
    p.add_argument("--root", default=None, help="data folder (default: $GAUSSOOD_DATA or "
                   "~/.cache/gaussood/data)")
    p.add_argument("--encoder", type=Path, default=CHECKPOINTS / "cifar10-small.pt",
                   help="encoder file for the cifar10 setting (trained on CPU if missing)")
    p.add_argument("--open-set-encoder", type=Path,
                   default=CHECKPOINTS / "cifar10-small-c0to5.pt",
                   help="encoder trained on classes 0-5 (trained on CPU if missing)")
    p.add_argument("--settings", nargs="+", default=["cifar10", "open-set"],
                   choices=["cifar10", "open-set"])
    p.add_argument("--ood", nargs="+", default=list(OOD_SETS), choices=list(OOD_SETS),
                   help="OOD sets to try (missing files are reported and skipped)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download missing SVHN / CIFAR-100 / MNIST")
    p.add_argument("--layer", default="backbone", choices=["backbone", "head"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-fit", type=int, default=40_000, help="ID train images per seed")
    p.add_argument("--n-eval", type=int, default=5_000,
                   help="held-out ID test images and images per OOD set, per seed")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--ee-max", type=int, default=3_000,
                   help="EllipticEnvelope fits on at most this many rows (its MCD is slow)")
    p.add_argument("--lof-max", type=int, default=10_000,
                   help="LocalOutlierFactor fits on at most this many rows")
    p.add_argument("--quick", action="store_true",
                   help="one seed, 5,000 fit / 1,000 eval images, small peer fits (< 5 min)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--name", default=None, help="output name (default cifar10_ood[_quick])")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--no-figure", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.n_fit, args.n_eval = args.seeds[:1], min(args.n_fit, 5000), \
            min(args.n_eval, 1000)
        args.ee_max, args.lof_max = min(args.ee_max, 1000), min(args.lof_max, 5000)
    if args.n_fit < 100 or args.n_eval < 100:
        p.error("--n-fit and --n-eval must be at least 100.")
    if not 0 < args.alpha < 1:
        p.error("--alpha must lie in (0, 1).")
    args.name = args.name or ("cifar10_ood_quick" if args.quick else "cifar10_ood")
    return args


# ------------------------------------------------------------------ encoders
def ensure_encoder(path: Path, classes, root, threads) -> Path:
    """The encoder file, trained with the CPU default first if it does not exist."""
    if path.is_file():
        return path
    from .checkpoint import save_encoder
    from .data import load_dataset
    from .train import TrainConfig, train_encoder

    log(f"{path} not found: training the CPU default encoder"
        f"{'' if classes is None else f' on classes {classes}'} (about 15-25 min on 2 cores)")
    train = load_dataset("cifar10", "train", root=root, classes=classes)
    result = train_encoder(train, TrainConfig(), device="auto",
                           checkpoint_dir=Path.home() / ".cache" / "gaussood" / "runs" / path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_encoder(result.model, path, half=True)
    return path


# ---------------------------------------------------------------------- data
def load_embedded(encoder: Path, name, split, root, layer, *, classes=None, n=None, seed=0,
                  download=False):
    """(embeddings, labels, ImageSet description) of one dataset, JPEG q75, cached."""
    from .data import load_dataset
    from .embed import extract_embeddings

    data = load_dataset(name, split, root=root, classes=classes, n=n, seed=seed,
                        jpeg_quality=75, download=download)  # a no-op on the q75 archive
    feats = extract_embeddings(encoder, data, layer=layer, progress=True)
    return feats, data.labels, data.source


def draw(rng, n_total, n):
    return np.sort(rng.permutation(n_total)[:min(n, n_total)])


# ------------------------------------------------------------------- methods
def our_scorers(seed, alpha=0.05):
    from .. import GaussianScorer, KNNScorer, NormShellScorer, PValueCombination

    common = {"random_state": seed, "alpha": alpha}
    return {
        "Gaussian (pooled)": (GaussianScorer(**common), False),
        "Gaussian (class-conditional)": (GaussianScorer(**common), True),
        "Gaussian (10 clusters)": (GaussianScorer(n_clusters=10, **common), False),
        "Norm shell": (NormShellScorer(**common), False),
        "kNN (k=50, cosine)": (KNNScorer(n_neighbors=50, **common), False),
        "kNN (k=50, Euclidean)": (KNNScorer(n_neighbors=50, normalize=False, **common), False),
        "Gaussian + shell (Fisher)": (PValueCombination(**common), False),
    }


def run_peers(X, y, evals, seed, args, alpha):
    """Scores (higher = more ID) of each peer on every eval set, and its FAR."""
    import torch
    from pytorch_ood.detector import KNN, Mahalanobis
    from sklearn.covariance import EllipticEnvelope
    from sklearn.neighbors import LocalOutlierFactor

    rng = np.random.default_rng(seed + 7)
    out = {}
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

    def torch_scores(det):
        return {k: -det.predict_features(torch.from_numpy(v)).double().numpy()
                for k, v in evals.items()}

    def timed(name, fn, note):
        t0 = time.perf_counter()
        try:
            scores, far = fn()
        except Exception as exc:  # a peer failing must not sink the benchmark
            log(f"  {name}: failed ({type(exc).__name__}: {exc})")
            out[name] = {"error": f"{type(exc).__name__}: {exc}", "note": note}
            return
        out[name] = {"scores": scores, "far": far, "seconds": time.perf_counter() - t0,
                     "note": note}
        log(f"  {name}: {out[name]['seconds']:.1f} s")

    timed("pytorch-ood Mahalanobis",
          lambda: (torch_scores(Mahalanobis(None).fit_features(Xt, yt)), None),
          "class-conditional means, shared covariance (Lee et al. 2018), labels used")
    timed("pytorch-ood KNN (k=50)",
          lambda: (torch_scores(KNN(None, k=50).fit_features(Xt, yt)), None),
          "distance to the 50th neighbour of L2-normalised features (Sun et al. 2022)")

    def sk(model, n_max):
        from threadpoolctl import threadpool_limits

        sub = X[draw(rng, X.shape[0], n_max)].astype(np.float64)
        # MCD's many small BLAS calls run 2-3x slower with threads than on one core
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            model.fit(sub)
            scores = {k: model.score_samples(v.astype(np.float64)) for k, v in evals.items()}
            far = float(np.mean(model.predict(evals["__id__"].astype(np.float64)) == -1))
        return scores, far

    timed("sklearn EllipticEnvelope",
          lambda: sk(EllipticEnvelope(contamination=alpha, random_state=seed), args.ee_max),
          f"MCD fit on {min(args.ee_max, X.shape[0])} random fit rows; threshold: "
          f"contamination={alpha}")
    timed("sklearn LOF (novelty)",
          lambda: sk(LocalOutlierFactor(n_neighbors=20, novelty=True, contamination=alpha),
                     args.lof_max),
          f"n_neighbors=20, fit on {min(args.lof_max, X.shape[0])} random fit rows; "
          f"threshold: contamination={alpha}")
    return out


# --------------------------------------------------------------------- a run
def run_setting(setting, encoder, args, root):
    """Per-seed metrics of every method for one setting."""
    from ..metrics import ood_report

    classes = list(range(6)) if setting == "open-set" else None
    log(f"[{setting}] embedding with {encoder.name} ({args.layer})")
    quick_n = args.n_fit * 2 if args.quick else None
    Xtr, ytr, src_tr = load_embedded(encoder, "cifar10", "train", root, args.layer,
                                     classes=classes, n=quick_n)
    Xte, yte, src_te = load_embedded(encoder, "cifar10", "test", root, args.layer,
                                     classes=classes, n=args.n_eval * 2 if args.quick else None)
    ood, described, skipped = {}, {}, {}
    if setting == "open-set":
        feats, _, src = load_embedded(encoder, "cifar10", "test", root, args.layer,
                                      classes=[6, 7, 8, 9],
                                      n=args.n_eval * 2 if args.quick else None)
        ood[OPEN_SET_NAME] = ("near", "CIFAR-10 test, classes 6-9 (open-set)", feats)
        described[OPEN_SET_NAME] = src
    else:
        for key in args.ood:
            name, split, kind, label = OOD_SETS[key]
            noise = key.endswith("noise")
            try:
                # noise: a pool of 2x n_eval; each seed draws from it
                feats, _, src = load_embedded(
                    encoder, name, split, root, args.layer, download=args.download,
                    n=2 * args.n_eval if (noise or args.quick) else None)
            except (FileNotFoundError, RuntimeError, OSError) as exc:
                skipped[key] = str(exc).splitlines()[0]
                log(f"  {label}: skipped ({skipped[key]})")
                continue
            ood[key] = (kind, label, feats)
            described[key] = src
    if not ood:
        raise FileNotFoundError("No OOD set could be loaded for the cifar10 setting.")

    per_seed = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        fit_rows = draw(rng, Xtr.shape[0], args.n_fit)
        X, y = Xtr[fit_rows], ytr[fit_rows]
        evals = {"__id__": Xte[draw(rng, Xte.shape[0], args.n_eval)]}
        evals.update({k: v[2][draw(rng, v[2].shape[0], args.n_eval)] for k, v in ood.items()})
        results = {}
        log(f"[{setting}] seed {seed}: fit on {X.shape[0]} x {X.shape[1]}")
        for name, (scorer, labelled) in our_scorers(seed, args.alpha).items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                scorer.fit(X, y) if labelled else scorer.fit(X)
            scores = {k: scorer.score_samples(v) for k, v in evals.items()}
            far = float(np.mean(scores["__id__"] < scorer.offset_))
            results[name] = {"scores": scores, "far": far,
                             "seconds": time.perf_counter() - t0,
                             "note": f"calibration {scorer.calibration_}, alpha {args.alpha}"}
            log(f"  {name}: {results[name]['seconds']:.1f} s, FAR {100 * far:.2f}%")
        if not args.no_peers:
            results.update(run_peers(X, y, evals, seed, args, args.alpha))
        seed_out = {}
        for name, r in results.items():
            if "error" in r:
                seed_out[name] = {"error": r["error"], "note": r["note"]}
                continue
            report = ood_report(r["scores"]["__id__"],
                                {k: r["scores"][k] for k in ood}).to_dict()
            seed_out[name] = {"metrics": report, "far": r["far"], "seconds": r["seconds"],
                              "note": r["note"]}
        if seed == args.seeds[0]:
            first_scores = {name: r["scores"] for name, r in results.items() if "scores" in r}
        per_seed.append(seed_out)
    data = {"id_train": src_tr, "id_test": src_te, "ood": described, "skipped": skipped,
            "n_fit": int(min(args.n_fit, Xtr.shape[0])),
            "n_eval_id": int(min(args.n_eval, Xte.shape[0])),
            "n_eval_ood": {k: int(min(args.n_eval, v[2].shape[0])) for k, v in ood.items()},
            "kinds": {k: v[0] for k, v in ood.items()}, "labels": {k: v[1] for k, v in ood.items()},
            "encoder": str(encoder.relative_to(REPO) if encoder.is_relative_to(REPO) else encoder),
            "feature_dim": int(Xtr.shape[1])}
    return summarise(per_seed, data, args), first_scores, data


def summarise(per_seed, data, args):
    """Mean and std over seeds of every metric; near/far means of AUROC."""
    methods = list(per_seed[0])
    summary = {}
    for m in methods:
        if any("error" in s[m] for s in per_seed):
            summary[m] = {"error": next(s[m]["error"] for s in per_seed if "error" in s[m]),
                          "note": per_seed[0][m]["note"]}
            continue
        sets = {}
        for k in data["kinds"]:
            sets[k] = {met: _ms([s[m]["metrics"][k][met] for s in per_seed]) for met in METRICS}
        for kind in ("near", "far"):
            keys = [k for k, v in data["kinds"].items() if v == kind]
            if keys:
                sets[f"{kind} mean"] = {"auroc": _ms([np.mean([s[m]["metrics"][k]["auroc"]
                                                               for k in keys])
                                                      for s in per_seed])}
        far = [s[m]["far"] for s in per_seed]
        summary[m] = {"sets": sets, "note": per_seed[0][m]["note"],
                      "far": None if far[0] is None else _ms(far),
                      "seconds": _ms([s[m]["seconds"] for s in per_seed])}
    return {"per_seed": per_seed, "summary": summary}


def _ms(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1
            else 0.0, "values": values.tolist()}


# ------------------------------------------------------------------- output
def markdown(setting, out, data, args):
    summary = out["summary"]
    keys = list(data["kinds"])
    cols = [(k, "auroc", data["labels"][k]) for k in keys]
    cols += [(f"{kind} mean", "auroc", f"{kind} mean") for kind in ("near", "far")
             if any(v == kind for v in data["kinds"].values())]
    ok = [m for m in summary if "error" not in summary[m]]
    best = {}
    for key, met, _ in cols:
        vals = {m: summary[m]["sets"][key][met]["mean"] for m in ok}
        best[key] = max(vals.values())
    fars = {m: abs(summary[m]["far"]["mean"] - args.alpha) for m in ok if summary[m]["far"]}
    best_far = min(fars.values()) if fars else None
    pm = "" if len(args.seeds) == 1 else " ± std"
    lines = [f"### Setting `{setting}`: AUROC (%), mean{pm} over seeds {args.seeds}", "",
             "| method | " + " | ".join(c[2] for c in cols)
             + f" | FAR at alpha={args.alpha} (%) | fit+score s |",
             "|---" * (len(cols) + 3) + "|"]
    for m in summary:
        if m not in ok:
            lines.append(f"| {m} | " + " | ".join("failed" for _ in cols)
                         + f" | - | - |  <!-- {summary[m]['error']} -->")
            continue
        cells = []
        for key, met, _ in cols:
            v = summary[m]["sets"][key][met]
            txt = f"{100 * v['mean']:.2f}" + ("" if not pm else f" ± {100 * v['std']:.2f}")
            cells.append(f"**{txt}**" if np.isclose(v["mean"], best[key]) else txt)
        far = summary[m]["far"]
        if far is None:
            far_txt = "n/a"
        else:
            far_txt = f"{100 * far['mean']:.2f}" + ("" if not pm else f" ± {100 * far['std']:.2f}")
            if best_far is not None and np.isclose(abs(far["mean"] - args.alpha), best_far):
                far_txt = f"**{far_txt}**"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {far_txt} | "
                     f"{summary[m]['seconds']['mean']:.1f} |")
    lines += ["", "Bold: best in the column (FAR: closest to alpha). FAR = share of held-out "
              "ID test images flagged by the method's own alpha (or contamination) threshold; "
              "pytorch-ood detectors have no threshold (n/a).", ""]
    # detailed metrics per set
    lines += [f"Per OOD set, all metrics (%), mean{pm}:", "",
              "| OOD set | method | AUROC | AUPR-In | AUPR-Out | FPR@95TPR (ID+) | "
              "FPR@95TPR (OOD+) |", "|---|---|---|---|---|---|---|"]
    for k in keys:
        bests = {met: (min if met in LOWER_IS_BETTER else max)(
            summary[m]["sets"][k][met]["mean"] for m in ok) for met in METRICS}
        for m in ok:
            cells = []
            for met in METRICS:
                v = summary[m]["sets"][k][met]
                txt = f"{100 * v['mean']:.2f}" + ("" if not pm else f" ± {100 * v['std']:.2f}")
                cells.append(f"**{txt}**" if np.isclose(v["mean"], bests[met]) else txt)
            lines.append(f"| {data['labels'][k]} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "Data:", f"- ID fit: {data['n_fit']} random images per seed of "
              f"{data['id_train']}", f"- ID held-out: {data['n_eval_id']} random images per "
              f"seed of {data['id_test']}"]
    for k, src in data["ood"].items():
        lines.append(f"- {data['labels'][k]} ({data['kinds'][k]}): {data['n_eval_ood'][k]} "
                     f"random images per seed of {src}; JPEG q75 re-encoded"
                     if k != OPEN_SET_NAME else
                     f"- {data['labels'][k]} (near): {data['n_eval_ood'][k]} random images "
                     f"per seed of {src}")
    for k, why in data["skipped"].items():
        lines.append(f"- {OOD_SETS[k][3]}: not run ({why})")
    lines.append(f"- encoder `{data['encoder']}`, {args.layer} features "
                 f"({data['feature_dim']}-d); the encoder is fixed across seeds")
    notes = [f"- {m}: {summary[m]['note']}" for m in summary]
    return "\n".join(lines + ["", "Methods:", *notes, ""])


def figure(all_scores, all_data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, k) for s, d in all_data.items() for k in d["kinds"]]
    methods = ["Gaussian (pooled)", "Norm shell"]
    fig, axes = plt.subplots(len(methods), len(panels), figsize=(3.2 * len(panels), 5.2),
                             squeeze=False)
    for col, (setting, k) in enumerate(panels):
        for row, m in enumerate(methods):
            ax = axes[row, col]
            sc = all_scores[setting][m]
            lo = np.percentile(np.concatenate([sc["__id__"], sc[k]]), 1)
            hi = max(sc["__id__"].max(), sc[k].max())
            bins = np.linspace(lo, hi, 60)
            ax.hist(np.clip(sc["__id__"], lo, None), bins, alpha=0.6, density=True,
                    label="CIFAR-10 classes 0-5 (ID test)" if setting == "open-set"
                    else "CIFAR-10 (ID test)")
            ax.hist(np.clip(sc[k], lo, None), bins, alpha=0.6, density=True,
                    label=all_data[setting]["labels"][k])
            ax.set_title(f"{m}\n{all_data[setting]['labels'][k]}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=6)
    fig.supxlabel("score (higher = more in-distribution; lowest 1% clipped)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if not args.no_peers:
        try:
            import pytorch_ood  # noqa: F401
        except ImportError:
            raise ImportError("The peers need pytorch-ood: pip install 'gaussood[bench]' "
                              "(or pass --no-peers).") from None
    from .data import data_root
    root = data_root(args.root)
    start = time.perf_counter()
    encoders = {"cifar10": args.encoder, "open-set": args.open_set_encoder}
    summaries, scores, datas = {}, {}, {}
    for setting in args.settings:
        enc = ensure_encoder(encoders[setting], list(range(6)) if setting == "open-set" else None,
                             args.root, args.threads)
        summaries[setting], scores[setting], datas[setting] = run_setting(setting, enc, args, root)
    wall = time.perf_counter() - start
    md = [f"## CIFAR-10 OOD benchmark{' (quick)' if args.quick else ''}", ""]
    for setting in args.settings:
        md.append(markdown(setting, summaries[setting], datas[setting], args))
    md.append(f"Command: `gaussood bench {' '.join(argv if argv is not None else sys.argv[1:])}`"
              f"; wall time {wall / 60:.1f} min; {os.cpu_count()} CPUs.")
    if not args.no_figure:
        fig_path = args.results_dir / f"{args.name}_hist.png"
        args.results_dir.mkdir(parents=True, exist_ok=True)
        figure(scores, datas, fig_path)
        md.append(f"\n![score histograms]({fig_path.name})")
    text = "\n".join(md) + "\n"
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "environment": environment(), "wall_seconds": wall,
              "settings": {s: {"data": datas[s], **summaries[s]} for s in args.settings}}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.results_dir / f"{args.name}.md").write_text(text)
    print(text)
    log(f"wrote {args.results_dir / args.name}.json, .md"
        f"{'' if args.no_figure else ' and _hist.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
