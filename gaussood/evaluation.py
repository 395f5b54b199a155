"""Evaluate OOD detectors on embeddings: fit per seed, score, summarise (numpy only).

``evaluate_embeddings(scorers, X_fit, y_fit, X_id, ood_sets, seeds=...)`` draws, for each
seed, new random subsets (the in-distribution (ID) rows the detectors are fitted on, the
held-out ID rows and the rows of each OOD set), fits every detector and reports AUROC,
AUPR and FPR at 95% TPR (both conventions) per OOD set, and the false-alarm rate on the
held-out ID rows at each detector's own threshold; mean and std over the seeds.

A detector is any object with ``fit`` and ``score_samples`` (higher = more ID): gaussood's
scorers, scikit-learn's outlier detectors, or a wrapper around another library. Its
false-alarm rate comes from ``score_pvalue_decision`` (gaussood scorers), else from
``predict`` (-1 = outlier), else it has none (n/a). ``gaussood.deep.evaluate`` embeds
images with an encoder and calls this function; the benchmark scripts add their peers.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["evaluate_embeddings", "Evaluation", "Method", "OODSet", "default_scorers",
           "draw", "METRICS"]

METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id_positive", "fpr95_ood_positive")
LOWER_IS_BETTER = {"fpr95_id_positive", "fpr95_ood_positive", "far_error"}


@dataclass
class OODSet:
    """One OOD set: its data, ``"near"`` or ``"far"``, a label for tables and a note.

    For ``evaluate_embeddings`` ``data`` is a 2-D array of embeddings. For
    ``gaussood.deep.evaluate`` it may also be an ``ImageSet``, a uint8 image array
    (N, H, W, 3), or a function of no arguments returning one of those (then a
    ``FileNotFoundError``, ``RuntimeError`` or ``OSError`` it raises skips the set, and
    the report says why).
    """

    data: Any
    kind: str = "far"
    label: str | None = None
    note: str | None = None  # appended to its line in the report's data section


@dataclass
class Method:
    """A detector in an evaluation: an unfitted object with ``fit`` / ``score_samples``.

    ``labels``: fit with the ID labels (``fit(X, y)``); ``note``: its line in the report's
    methods section (default: a gaussood scorer's calibration and alpha); ``optional``: a
    failure (any exception in fit or scoring) is reported as "failed" instead of raised.
    """

    estimator: Any
    labels: bool = False
    note: str | None = None
    optional: bool = False


def default_scorers(alpha: float = 0.05) -> dict:
    """The gaussood scorers of the benchmark: name -> (unfitted scorer, fit with labels)."""
    from .combine import PValueCombination
    from .gaussian import GaussianScorer
    from .knn import KNNScorer
    from .norm_shell import NormShellScorer
    from .views import gaussian_views

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


def draw(rng, n_total, n):
    """``n`` sorted row indices out of ``n_total`` (all of them when ``n >= n_total``)."""
    return np.sort(rng.permutation(n_total)[:min(n, n_total)])


@dataclass
class Evaluation:
    """What :func:`evaluate_embeddings` (and ``gaussood.deep.evaluate``) measured.

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
    layer: str | None
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


def _method(spec) -> Method:
    if isinstance(spec, Method):
        return spec
    if isinstance(spec, tuple):
        return Method(*spec)
    return Method(spec)


def _fresh(estimator, seed: int):
    """An unfitted copy of ``estimator`` with ``random_state=seed`` where it has one."""
    if hasattr(estimator, "get_params"):
        from sklearn.base import clone

        fresh = clone(estimator)
        if "random_state" in fresh.get_params(deep=False):
            fresh.set_params(random_state=seed)
        return fresh
    return copy.deepcopy(estimator)


def _fit_score(est, labels: bool, X, y, evals, X_cal=None):
    """(scores of every eval set, false-alarm rate on ``evals["__id__"]`` or None).
    With ``X_cal``, a detector that has ``calibrate`` is calibrated on it after the fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est.fit(X, y) if labels else est.fit(X)
        if X_cal is not None and hasattr(est, "calibrate"):
            est.calibrate(X_cal)
    if hasattr(est, "score_pvalue_decision"):     # a gaussood scorer: its own threshold
        scored = est.score_pvalue_decision(evals["__id__"])   # fold models too (cv+)
        scores = {k: est.score_samples(v) for k, v in evals.items() if k != "__id__"}
        scores["__id__"] = scored.score
        return scores, float(np.mean(scored.flagged))
    scores = {k: np.asarray(est.score_samples(v), dtype=np.float64) for k, v in evals.items()}
    far = (float(np.mean(np.asarray(est.predict(evals["__id__"])) == -1))
           if hasattr(est, "predict") else None)
    return scores, far


def evaluate_embeddings(scorers: Mapping[str, Any] | None, X_fit, y_fit, X_id,
                        ood_sets: Mapping[str, Any], *, seeds=(0,), n_fit: int | None = None,
                        n_eval: int | None = None, alpha: float = 0.05,
                        n_calibrate: int | str | None = None,
                        name: str = "evaluation", layer: str | None = None,
                        describe: Mapping[str, Any] | None = None,
                        log: Callable[[str], None] | None = None) -> Evaluation:
    """Fit and score every detector on the same embeddings, over several seeds.

    Parameters
    ----------
    scorers : mapping name -> detector, (detector, fit_with_labels) or Method, or None
        Unfitted detectors (objects with ``fit`` / ``score_samples``), cloned for each
        seed with ``random_state=seed`` where they have one. None:
        :func:`default_scorers` at ``alpha``.
    X_fit : array of shape (n, d)
        ID rows to fit on; ``y_fit`` their labels (or None: all -1).
    X_id : array of shape (m, d)
        Held-out ID rows.
    ood_sets : mapping name -> OODSet (``data`` an (k, d) array) or name -> array (far)
    seeds : sequence of int
    n_fit, n_eval : int, optional
        Rows drawn per seed from ``X_fit``, and from ``X_id`` and each OOD set (default:
        all). Each seed's draws come from ``np.random.default_rng(seed)``: fit rows,
        held-out rows, then each OOD set in order.
    alpha : float
        Target false-alarm rate, reported beside each detector's false alarms.
    n_calibrate : int or "rest", optional
        Also draw this many rows of ``X_id`` per seed, disjoint from the held-out rows
        (drawn after every other draw, so the other draws do not change), and calibrate
        every detector that has ``calibrate`` on them after its fit (split conformal on
        ID rows the fit never saw; e.g. images the encoder was not trained on). Needs
        ``n_eval + n_calibrate <= len(X_id)``. ``"rest"``: every row of ``X_id`` that is
        not evaluated; when none is left (``n_eval >= len(X_id)``) the detectors keep the
        calibration of their fit, and the report says so. None (default): no held-out
        calibration.
    name, layer : str
        Setting name and feature layer in the report.
    describe : mapping, optional
        Descriptions for the report's data section: ``id_train``, ``id_test``, ``ood``
        (name -> text), ``skipped`` (name -> why), ``skipped_labels``, ``encoder``,
        ``views``.
    log : callable, optional
        Called with one progress line at a time.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import GaussianScorer, evaluate_embeddings
    >>> rng = np.random.default_rng(0)
    >>> X, X_id = rng.normal(size=(500, 4)), rng.normal(size=(200, 4))
    >>> ev = evaluate_embeddings({"Gaussian": GaussianScorer()}, X, None, X_id,
    ...                          {"shifted": rng.normal(size=(200, 4)) + 3.0})
    >>> ev.summary["Gaussian"]["sets"]["shifted"]["auroc"]["mean"] > 0.99
    True
    """
    from .metrics import ood_report

    report = log or (lambda msg: None)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    methods = {k: _method(v) for k, v in (default_scorers(alpha) if scorers is None
                                          else scorers).items()}
    Xtr, Xte = np.asarray(X_fit), np.asarray(X_id)
    ytr = np.full(len(Xtr), -1, np.int64) if y_fit is None else np.asarray(y_fit)
    if Xtr.ndim != 2 or Xte.ndim != 2 or len(ytr) != len(Xtr):
        raise ValueError(f"X_fit and X_id must be 2-D and y_fit one label per row of X_fit; "
                         f"got {Xtr.shape}, {Xte.shape} and {ytr.shape}")
    sets = {}
    for key, spec in ood_sets.items():
        spec = spec if isinstance(spec, OODSet) else OODSet(spec)
        sets[key] = (spec.kind, spec.label or key, np.asarray(spec.data), spec.note)
    if not sets:
        raise ValueError(f"No OOD set for {name}.")
    n_fit = Xtr.shape[0] if n_fit is None else n_fit
    n_eval = Xte.shape[0] if n_eval is None else n_eval
    n_evaluated = min(n_eval, Xte.shape[0])
    n_left = Xte.shape[0] - n_evaluated
    if isinstance(n_calibrate, str):
        if n_calibrate != "rest":
            raise ValueError(f"n_calibrate must be an int, 'rest' or None; got {n_calibrate!r}")
        n_calibrate = n_left or None
        if n_calibrate is None:
            report(f"[{name}] no held-out ID row is left for calibration (n_eval = "
                   f"{n_evaluated} of {Xte.shape[0]}); the detectors keep the calibration "
                   "of their fit")
    elif n_calibrate is not None and not 1 <= n_calibrate <= n_left:
        raise ValueError(f"n_calibrate must be in 1..{n_left} (the {Xte.shape[0]} held-out ID "
                         f"rows less the {n_evaluated} evaluated); got {n_calibrate!r}")

    per_seed, first_scores = [], {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        fit_rows = draw(rng, Xtr.shape[0], n_fit)
        X, y = Xtr[fit_rows], ytr[fit_rows]
        id_rows = draw(rng, Xte.shape[0], n_eval)
        evals = {"__id__": Xte[id_rows]}
        evals.update({k: v[2][draw(rng, v[2].shape[0], n_eval)] for k, v in sets.items()})
        X_cal = None
        if n_calibrate is not None:
            rest = np.setdiff1d(np.arange(Xte.shape[0]), id_rows)
            X_cal = Xte[rest[draw(rng, rest.shape[0], n_calibrate)]]
        results = {}
        report(f"[{name}] seed {seed}: fit on {X.shape[0]} x {X.shape[1]}")
        for method, spec in methods.items():
            est = _fresh(spec.estimator, seed)
            t0 = time.perf_counter()
            try:
                scores, far = _fit_score(est, spec.labels, X, y, evals, X_cal)
            except Exception as exc:  # noqa: BLE001 - an optional method must not sink the run
                if not spec.optional:
                    raise
                results[method] = {"error": f"{type(exc).__name__}: {exc}", "note": spec.note}
                report(f"  {method}: failed ({type(exc).__name__}: {exc})")
                continue
            note = spec.note if spec.note is not None else (
                f"calibration {est.calibration_}, alpha {alpha}"
                if hasattr(est, "calibration_") else "")
            results[method] = {"scores": scores, "far": far, "note": note,
                               "seconds": time.perf_counter() - t0}
            far_text = "" if far is None else f", FAR {100 * far:.2f}%"
            report(f"  {method}: {results[method]['seconds']:.1f} s{far_text}")
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
    describe = dict(describe or {})
    data = {"id_train": describe.get("id_train", f"embeddings {Xtr.shape[0]} x {Xtr.shape[1]}"),
            "id_test": describe.get("id_test", f"embeddings {Xte.shape[0]} x {Xte.shape[1]}"),
            "views": describe.get("views"),
            "ood": {k: describe.get("ood", {}).get(k, f"embeddings {v[2].shape[0]} x "
                                                      f"{v[2].shape[1]}")
                    for k, v in sets.items()},
            "skipped": dict(describe.get("skipped", {})),
            "n_fit": int(min(n_fit, Xtr.shape[0])),
            "n_eval_id": int(min(n_eval, Xte.shape[0])),
            "n_calibrate": None if n_calibrate is None else int(n_calibrate),
            "n_eval_ood": {k: int(min(n_eval, v[2].shape[0])) for k, v in sets.items()},
            "kinds": {k: v[0] for k, v in sets.items()},
            "labels": {k: v[1] for k, v in sets.items()},
            "encoder": describe.get("encoder"),
            "feature_dim": int(Xtr.shape[1])}
    notes = {k: v[3] for k, v in sets.items()}
    return Evaluation(name, data, per_seed, _summarise(per_seed, data), seeds, alpha, layer,
                      first_scores, notes, dict(describe.get("skipped_labels", {})))


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
              "n/a: the method has no threshold.", ""]
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
    if data.get("n_calibrate"):
        lines.append(f"- ID calibration: {data['n_calibrate']} other random images per seed of "
                     "the same held-out set; every gaussood scorer is calibrated on them "
                     "after its fit (`calibrate`, split conformal); the peers are not")
    elif "n_calibrate" in data:
        lines.append("- ID calibration: on the fit rows (each scorer's own out-of-fold "
                     "calibration); no held-out ID images")
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
