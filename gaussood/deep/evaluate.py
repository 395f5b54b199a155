"""Evaluate OOD scorers on one encoder: embed, fit per seed, score, report.

``evaluate(encoder, id_fit, id_test, ood, scorers=..., seeds=...)`` embeds the
in-distribution (ID) fit and test sets and every OOD set once, then for each seed
draws new random subsets (the ID rows the scorers are fitted on, the held-out ID
rows and the rows of each OOD set), fits every scorer and reports AUROC, AUPR and
FPR at 95% TPR (both conventions) per OOD set, and the false-alarm rate on the
held-out ID rows at each scorer's own threshold; mean and std over the seeds.
The encoder is fixed across seeds. It never trains anything: an encoder file
that is missing is an error.

The CIFAR-10 benchmark (``benchmarks/cifar10_ood.py``) and ``gaussood bench``
are thin layers over this function.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["evaluate", "Evaluation", "OODSet", "default_scorers", "dataset_loader", "METRICS"]

METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id_positive", "fpr95_ood_positive")
LOWER_IS_BETTER = {"fpr95_id_positive", "fpr95_ood_positive", "far_error"}
# Errors that mean "this OOD set's files are not here": the set is skipped and reported.
MISSING = (FileNotFoundError, RuntimeError, OSError)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class OODSet:
    """One OOD set: its data, ``"near"`` or ``"far"``, a label for tables and a note.

    ``data`` is an ``ImageSet``, a uint8 image array (N, H, W, 3), a 2-D array of
    embeddings, or a function of no arguments returning one of those (then a
    ``FileNotFoundError``, ``RuntimeError`` or ``OSError`` it raises skips the set,
    and the report says why).
    """

    data: Any
    kind: str = "far"
    label: str | None = None
    note: str | None = None  # appended to its line in the report's data section


def default_scorers(alpha: float = 0.05) -> dict:
    """The gaussood scorers of the benchmark: name -> (unfitted scorer, fit with labels)."""
    from .. import GaussianScorer, KNNScorer, NormShellScorer, PValueCombination, gaussian_views

    common = {"alpha": alpha}
    return {
        "Gaussian views: raw + L2 + relative L2 (Fisher; default)": (
            gaussian_views(**common), True),
        "Gaussian (pooled)": (GaussianScorer(**common), False),
        "Gaussian (class-conditional)": (GaussianScorer(**common), True),
        "Gaussian (class-conditional, L2)": (GaussianScorer(normalize="l2", **common), True),
        "Gaussian (class-conditional, centred L2)": (
            GaussianScorer(normalize="center-l2", **common), True),
        "Gaussian relative (L2)": (GaussianScorer(relative=True, normalize="l2", **common),
                                   True),
        "Gaussian views: raw + L2 + relative L2 + relative (Fisher)": (
            gaussian_views(("raw", "l2", "relative-l2", "relative"), **common), True),
        "Gaussian (10 clusters)": (GaussianScorer(n_clusters=10, **common), False),
        "Norm shell": (NormShellScorer(**common), False),
        "kNN (k=50, cosine)": (KNNScorer(n_neighbors=50, **common), False),
        "kNN (k=50, Euclidean)": (KNNScorer(n_neighbors=50, normalize=False, **common), False),
        "Gaussian + shell (Fisher)": (PValueCombination(**common), False),
    }


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    ``summary[method]["sets"][ood][metric]`` holds ``{"mean", "std", "values"}``;
    ``per_seed`` the raw per-seed metrics; ``data`` what was used; ``scores`` the
    scores of the first seed (``"__id__"`` for the held-out ID rows), for figures.
    """

    name: str
    data: dict
    per_seed: list
    summary: dict
    seeds: list
    alpha: float
    layer: str
    scores: dict = field(default_factory=dict, repr=False)
    notes: dict = field(default_factory=dict, repr=False)  # OOD name -> note in the report
    skipped_labels: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """``{"data", "per_seed", "summary"}`` (JSON-ready)."""
        return {"data": self.data, "per_seed": self.per_seed, "summary": self.summary}

    def to_json(self, indent: int = 1) -> str:
        return json.dumps({"name": self.name, "seeds": self.seeds, "alpha": self.alpha,
                           "layer": self.layer, **self.to_dict()}, indent=indent)

    def to_markdown(self) -> str:
        """AUROC table with the false-alarm rate, all metrics per OOD set, data and methods."""
        return _markdown(self)


# ---------------------------------------------------------------------- data
def dataset_loader(name: str, split: str = "test", *, root=None, classes=None, n=None,
                   seed: int = 0, download: bool = False, jpeg_quality: int | None = 75):
    """A function of no arguments that loads ``name`` with ``load_dataset`` (for an
    ``OODSet`` that is skipped when its files are missing). JPEG q75 by default: the
    compression of the CIFAR-10 archive, so that no detector can key on compression."""
    from .data import load_dataset

    def load():
        return load_dataset(name, split, root=root, classes=classes, n=n, seed=seed,
                            jpeg_quality=jpeg_quality, download=download)
    return load


def _as_embeddings(item, encoder, layer, progress, views=None):
    """(embeddings, labels, one-line description) of an ImageSet or an array."""
    from .data import ImageSet

    if isinstance(item, ImageSet):
        if encoder is None:
            raise ValueError("image sets need an encoder")
        from .embed import extract_embeddings

        return (extract_embeddings(_encoder_file(encoder), item, layer=layer, progress=progress,
                                   views=views),
                item.labels, item.source)
    array = np.asarray(item)
    if array.ndim == 4:
        if encoder is None:
            raise ValueError("images need an encoder")
        from .checkpoint import load_encoder
        from .embed import embed_images

        model = load_encoder(_encoder_file(encoder)) if isinstance(encoder, (str, Path)) \
            else encoder
        feats = embed_images(model, array, layer=layer, progress=progress, views=views)
        return feats, np.full(len(array), -1, np.int64), f"{len(array)} images {array.shape[1:]}"
    if array.ndim != 2:
        raise ValueError(f"want an ImageSet, images (N, H, W, 3) or embeddings (N, d); "
                         f"got shape {array.shape}")
    return array, np.full(len(array), -1, np.int64), f"embeddings {array.shape[0]} x " \
        f"{array.shape[1]}"


def _encoder_file(encoder) -> Path:
    path = Path(encoder)
    if not path.is_file():
        raise FileNotFoundError(f"encoder file not found: {path}")
    return path


def draw(rng, n_total, n):
    return np.sort(rng.permutation(n_total)[:min(n, n_total)])


# ------------------------------------------------------------------ evaluate
def evaluate(encoder, id_fit, id_test, ood: Mapping[str, Any], *,
             scorers: Mapping[str, Any] | None = None, seeds=(0,), n_fit: int | None = None,
             n_eval: int | None = None, alpha: float = 0.05, layer: str = "backbone",
             views: str | None = None,
             id_labels=None, peers: Callable | None = None, name: str = "evaluation",
             encoder_label: str | None = None, progress: bool = True) -> Evaluation:
    """Fit and score every scorer on the same embeddings, over several seeds.

    Parameters
    ----------
    encoder : path of a gaussood encoder file, a torch encoder, or None
        None when every set is given as embeddings already. Never trained here.
    id_fit, id_test : ImageSet, images (N, H, W, 3) or embeddings (N, d)
        ID rows to fit the scorers on, and held-out ID rows to evaluate on.
    ood : mapping name -> OODSet, or name -> data (a far OOD set labelled by its name)
    scorers : mapping name -> scorer or (scorer, fit_with_labels), optional
        Unfitted templates, cloned for each seed with ``random_state=seed``.
        Default: :func:`default_scorers` at ``alpha``.
    seeds : sequence of int
    n_fit, n_eval : int, optional
        Rows drawn per seed from ``id_fit``, and from ``id_test`` and each OOD set
        (default: all).
    alpha : float
        Target false-alarm rate, reported beside each scorer's false alarms.
    layer : {"backbone", "head"}
    views : None, "flip" or "rot4"
        Test-time views of the encoder (``gaussood.deep.embed_images``), for every set.
    id_labels : array, optional
        Labels of ``id_fit`` given as an array (an ImageSet carries its own).
    peers : callable, optional
        ``peers(X, y, evals, seed) -> {name: {"scores", "far", "seconds", "note"}
        or {"error", "note"}}``: methods other than gaussood scorers, run after them
        on the same rows (``evals`` maps ``"__id__"`` and each OOD name to rows).
    name : str
        Setting name in the report.
    encoder_label : str, optional
        How the report names the encoder (default: ``str(encoder)``).

    Returns
    -------
    Evaluation
    """
    from sklearn.base import clone

    from ..metrics import ood_report

    report = log if progress else (lambda msg: None)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    scorers = default_scorers(alpha) if scorers is None else scorers
    report(f"[{name}] embedding with {getattr(encoder, 'name', encoder)} ({layer})")
    Xtr, ytr, src_tr = _as_embeddings(id_fit, encoder, layer, progress, views)
    if id_labels is not None:
        ytr = np.asarray(id_labels)
    Xte, _, src_te = _as_embeddings(id_test, encoder, layer, progress, views)
    sets, described, skipped = {}, {}, {}
    for key, spec in ood.items():
        spec = spec if isinstance(spec, OODSet) else OODSet(spec)
        label = spec.label or key
        try:
            data = spec.data() if callable(spec.data) else spec.data
            feats, _, src = _as_embeddings(data, encoder, layer, progress, views)
        except MISSING as exc:
            if not callable(spec.data):
                raise
            skipped[key] = str(exc).splitlines()[0]
            report(f"  {label}: skipped ({skipped[key]})")
            continue
        sets[key] = (spec.kind, label, feats, spec.note)
        described[key] = src
    if not sets:
        raise FileNotFoundError(f"No OOD set could be loaded for {name}.")
    n_fit = Xtr.shape[0] if n_fit is None else n_fit
    n_eval = Xte.shape[0] if n_eval is None else n_eval

    per_seed, first_scores = [], {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        fit_rows = draw(rng, Xtr.shape[0], n_fit)
        X, y = Xtr[fit_rows], ytr[fit_rows]
        evals = {"__id__": Xte[draw(rng, Xte.shape[0], n_eval)]}
        evals.update({k: v[2][draw(rng, v[2].shape[0], n_eval)] for k, v in sets.items()})
        results = {}
        report(f"[{name}] seed {seed}: fit on {X.shape[0]} x {X.shape[1]}")
        for method, spec in scorers.items():
            template, labelled = spec if isinstance(spec, tuple) else (spec, False)
            scorer = clone(template)
            if "random_state" in scorer.get_params():
                scorer.set_params(random_state=seed)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                scorer.fit(X, y) if labelled else scorer.fit(X)
            scored = scorer.score_pvalue_decision(evals["__id__"])  # fold models too (cv+)
            scores = {k: scorer.score_samples(v) for k, v in evals.items() if k != "__id__"}
            scores["__id__"] = scored.score
            far = float(np.mean(scored.flagged))
            results[method] = {"scores": scores, "far": far,
                               "seconds": time.perf_counter() - t0,
                               "note": f"calibration {scorer.calibration_}, alpha {alpha}"}
            report(f"  {method}: {results[method]['seconds']:.1f} s, FAR {100 * far:.2f}%")
        if peers is not None:
            results.update(peers(X, y, evals, seed))
        seed_out = {}
        for method, r in results.items():
            if "error" in r:
                seed_out[method] = {"error": r["error"], "note": r["note"]}
                continue
            metrics = ood_report(r["scores"]["__id__"],
                                 {k: r["scores"][k] for k in sets}).to_dict()
            seed_out[method] = {"metrics": metrics, "far": r["far"], "seconds": r["seconds"],
                                "note": r["note"]}
        if seed == seeds[0]:
            first_scores = {m: r["scores"] for m, r in results.items() if "scores" in r}
        per_seed.append(seed_out)
    data = {"id_train": src_tr, "id_test": src_te, "views": views, "ood": described,
            "skipped": skipped,
            "n_fit": int(min(n_fit, Xtr.shape[0])),
            "n_eval_id": int(min(n_eval, Xte.shape[0])),
            "n_eval_ood": {k: int(min(n_eval, v[2].shape[0])) for k, v in sets.items()},
            "kinds": {k: v[0] for k, v in sets.items()},
            "labels": {k: v[1] for k, v in sets.items()},
            "encoder": encoder_label if encoder_label is not None else str(encoder),
            "feature_dim": int(Xtr.shape[1])}
    notes = {k: v[3] for k, v in sets.items()}
    skipped_labels = {k: (ood[k].label if isinstance(ood[k], OODSet) and ood[k].label else k)
                      for k in skipped}
    return Evaluation(name, data, per_seed, _summarise(per_seed, data), seeds, alpha, layer,
                      first_scores, notes, skipped_labels)


def _summarise(per_seed, data):
    """Mean and std over seeds of every metric; near/far means of AUROC."""
    summary = {}
    for m in per_seed[0]:
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
    return summary


def _ms(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1
            else 0.0, "values": values.tolist()}


# -------------------------------------------------------------------- report
def _markdown(ev: Evaluation) -> str:
    summary, data, alpha = ev.summary, ev.data, ev.alpha
    keys = list(data["kinds"])
    cols = [(k, "auroc", data["labels"][k]) for k in keys]
    cols += [(f"{kind} mean", "auroc", f"{kind} mean") for kind in ("near", "far")
             if any(v == kind for v in data["kinds"].values())]
    ok = [m for m in summary if "error" not in summary[m]]
    best = {}
    for key, met, _ in cols:
        vals = {m: summary[m]["sets"][key][met]["mean"] for m in ok}
        best[key] = max(vals.values())
    fars = {m: abs(summary[m]["far"]["mean"] - alpha) for m in ok if summary[m]["far"]}
    best_far = min(fars.values()) if fars else None
    pm = "" if len(ev.seeds) == 1 else " ± std"
    lines = [f"### Setting `{ev.name}`: AUROC (%), mean{pm} over seeds {ev.seeds}", "",
             "| method | " + " | ".join(c[2] for c in cols)
             + f" | FAR at alpha={alpha} (%) | fit+score s |",
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
            if best_far is not None and np.isclose(abs(far["mean"] - alpha), best_far):
                far_txt = f"**{far_txt}**"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {far_txt} | "
                     f"{summary[m]['seconds']['mean']:.1f} |")
    lines += ["", "Bold: best in the column (FAR: closest to alpha). FAR = share of held-out "
              "ID test images flagged by the method's own alpha (or contamination) threshold; "
              "pytorch-ood detectors have no threshold (n/a).", ""]
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
        note = ev.notes.get(k)
        lines.append(f"- {data['labels'][k]} ({data['kinds'][k]}): {data['n_eval_ood'][k]} "
                     f"random images per seed of {src}" + (f"; {note}" if note else ""))
    for k, why in data["skipped"].items():
        lines.append(f"- {ev.skipped_labels.get(k, k)}: not run ({why})")
    lines.append(f"- encoder `{data['encoder']}`, {ev.layer} features "
                 f"({data['feature_dim']}-d); the encoder is fixed across seeds")
    methods = [f"- {m}: {summary[m]['note']}" for m in summary]
    return "\n".join(lines + ["", "Methods:", *methods, ""])
