"""False-alarm rate of the alpha threshold on fresh ID data: default, cross-conformal, CV+.

For each cell of a grid (n fit rows, d features, covariance spectrum, seed) the
scorer is fitted at alpha = 0.05 and the share of ``n_fresh`` (20,000) fresh
in-distribution rows that ``predict`` flags is measured. The
standard error of a 5% rate on 20,000 rows is 0.15 points; the pass mark is
[4%, 6%].

Spectra (X = Z @ A, Z standard normal, n x d):

* ``isotropic``: A = I;
* ``decaying``: eigenvalues 1 / (1 + i) in a random rotation (``tests/conftest.py``);
* ``randA``: A = randn(d, d) / sqrt(d) (Marchenko-Pastur spectrum with ratio 1: many
  near-zero eigenvalues, the worst case for covariance shrinkage).

Columns (all at alpha = 0.05, on the same fresh rows):

* ``default``: the scorer's defaults (``calibration="auto"``), ``scorer.predict(fresh)
  == -1``; the ``auto`` column says what it resolved to ("cv+" for GaussianScorer
  where d / n >= 0.02, else "conformal");
* ``conformal``: ``calibration="conformal"``, cross-conformal (the default before
  CV+): threshold from the out-of-fold scores of the fold models, fresh rows scored
  by the final model fitted on all n rows;
* ``cvplus``: ``calibration="cv+"`` (the library's CV+, Barber et al. 2021): a fresh
  row is scored by every fold model k and
  p(x) = (1 + sum_k #{i in fold k : s_i^(k) <= s^(k)(x)}) / (n + 1); flagged when
  p <= alpha;
* ``fixed_shrink`` (Gaussian only): cross-conformal with fold models that use the
  full-data Ledoit-Wolf shrinkage intensity (``covariance=<float>``);
* ``split``: split conformal reference, fit on the first 2/3 of the rows and
  ``calibrate`` on the last 1/3 (exact in finite samples, on average over
  calibration sets; one set of n/3 rows scatters the rate by about
  sqrt(0.05 * 0.95 / (n / 3)), 1 point at n = 1,500, so its misses there are noise).

Scorers: ``GaussianScorer()`` on the whole grid; ``NormShellScorer()`` and
class-conditional ``GaussianScorer().fit(X, y)`` (10 classes, means 3 * randn) on
the n = 1,500, d = 512 cells (``--extra``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/calibration_grid.py`` (see ``total_s`` in
the JSON; one busy core); ``--quick`` runs a few cells. Writes
``benchmarks/results/calibration_grid.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import environment, write_results
from gaussood import GaussianScorer, NormShellScorer

ALPHA = 0.05
N_FRESH = 20_000
GRID = {"n": [1500, 5000, 20000], "d": [64, 512],
        "spectrum": ["isotropic", "decaying", "randA"], "seed": [0, 1]}


def mixing_matrix(spectrum, d, seed):
    rng = np.random.default_rng(1000 + seed)
    if spectrum == "isotropic":
        return np.eye(d)
    if spectrum == "decaying":
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        return (q * (1.0 / np.sqrt(1.0 + np.arange(d)))).T  # rows scaled, then rotated
    if spectrum == "randA":
        return rng.normal(size=(d, d)) / np.sqrt(d)
    raise ValueError(spectrum)


def cell(n, d, spectrum, seed, kind, methods):
    rng = np.random.default_rng(seed)
    A = mixing_matrix(spectrum, d, seed)
    y = y_fresh = None
    if kind == "class":
        means = 3.0 * np.random.default_rng(2000 + seed).normal(size=(10, d))
        y, y_fresh = rng.integers(0, 10, size=n), rng.integers(0, 10, size=N_FRESH)
        X = means[y] + rng.normal(size=(n, d)) @ A
        fresh = means[y_fresh] + rng.normal(size=(N_FRESH, d)) @ A
    else:
        X = rng.normal(size=(n, d)) @ A
        fresh = rng.normal(size=(N_FRESH, d)) @ A
    make = (lambda **kw: NormShellScorer(**kw)) if kind == "shell" else \
        (lambda **kw: GaussianScorer(**kw))
    out = {"n": n, "d": d, "spectrum": spectrum, "seed": seed, "scorer": kind}
    t0 = time.perf_counter()
    scorer = make(alpha=ALPHA, random_state=seed).fit(X, y)
    out["fit_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    out["default"] = float(np.mean(scorer.predict(fresh) == -1))
    out["predict_s"] = round(time.perf_counter() - t0, 2)
    out["auto"] = scorer.calibration_
    for name, calibration in (("conformal", "conformal"), ("cvplus", "cv+")):
        if name not in methods:
            continue
        if scorer.calibration_ == calibration:  # the default already is this one
            out[name] = out["default"]
        else:
            other = make(alpha=ALPHA, calibration=calibration, random_state=seed).fit(X, y)
            out[name] = float(np.mean(other.predict(fresh) == -1))
    if "fixed_shrink" in methods and kind != "shell":
        fixed = GaussianScorer(float(scorer.shrinkage_), alpha=ALPHA, calibration="conformal",
                               random_state=seed)
        out["fixed_shrink"] = float(np.mean(fixed.fit(X, y).predict(fresh) == -1))
        out["shrinkage"] = float(scorer.shrinkage_)
    if "split" in methods:
        cut = 2 * n // 3
        split = make(alpha=ALPHA, calibration="chi2" if kind != "shell" else "shell")
        split.fit(X[:cut], None if y is None else y[:cut]).calibrate(X[cut:])
        out["split"] = float(np.mean(split.predict(fresh) == -1))
    return out


def table(rows, methods):
    cols = ["default"] + [m for m in methods if m != "default"]
    head = ("| scorer | n | d | spectrum | seed | auto | "
            + " | ".join(f"{c} FAR %" for c in cols) + " |")
    lines = [head, "|" + "---|" * (6 + len(cols))]
    for r in rows:
        vals = []
        for c in cols:
            v = r.get(c)
            if v is None:
                vals.append("")
            else:
                mark = "" if 0.04 <= v <= 0.06 else " **x**"
                vals.append(f"{100 * v:.2f}{mark}")
        lines.append(f"| {r['scorer']} | {r['n']} | {r['d']} | {r['spectrum']} | {r['seed']} | "
                     f"{r.get('auto', '')} | " + " | ".join(vals) + " |")
    summary = []
    for c in cols:
        v = [r[c] for r in rows if r.get(c) is not None]
        if v:
            inside = sum(0.04 <= x <= 0.06 for x in v)
            summary.append(f"- `{c}`: {inside}/{len(v)} cells in [4%, 6%]; "
                           f"range {100 * min(v):.2f}-{100 * max(v):.2f}%")
    note = ("False-alarm rate (%) on 20,000 fresh ID rows at alpha = 5% (SE 0.15 points); "
            "**x**: outside [4%, 6%]. See the script's docstring for the columns.")
    return "# Calibration grid\n\n" + note + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(summary)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cells only")
    parser.add_argument("--no-extra", action="store_true",
                        help="skip the norm-shell and class-conditional cells")
    parser.add_argument("--methods", default="conformal,cvplus,fixed_shrink,split")
    parser.add_argument("--name", default="calibration_grid")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    cells = [(n, d, s, seed, "gaussian") for n in GRID["n"] for d in GRID["d"]
             for s in GRID["spectrum"] for seed in GRID["seed"]]
    if not args.no_extra:
        cells += [(1500, 512, s, seed, kind) for kind in ("shell", "class")
                  for s in GRID["spectrum"] for seed in GRID["seed"]]
    if args.quick:
        cells = [c for c in cells if c[0] == 1500 and c[2] == "randA" and c[3] == 0]
    rows = []
    t0 = time.perf_counter()
    for c in cells:
        rows.append(cell(*c, methods))
        r = rows[-1]
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    result = {"alpha": ALPHA, "n_fresh": N_FRESH, "grid": GRID, "methods": methods,
              "rows": rows, "total_s": round(time.perf_counter() - t0, 1),
              "environment": environment()}
    write_results(args.name, result, table(rows, methods))


if __name__ == "__main__":
    main()
