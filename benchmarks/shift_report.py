"""Tables and figure of benchmarks/shift.py (results/shift.md, shift.png, shift_open_set.md)."""

from __future__ import annotations

import numpy as np
from shift import REAL_TESTS, SHIFTS

NAMES = {"ks": "KS", "fisher": "Fisher", "hc": "HC", "hotelling": "Hotelling F",
         "hotelling ref": "Hotelling ref", "mmd": "MMD",
         "ks naive": "KS naive", "fisher naive": "Fisher naive", "hc naive": "HC naive"}


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def spread(v):
    return f"{pct(min(v))} / {pct(float(np.mean(v)))} / {pct(max(v))}"


def table(rows, lead, keys, fmt=pct):
    """Markdown table: the ``lead`` columns as given, ``keys`` through ``fmt``."""
    L = ["| " + " | ".join([*lead, *(NAMES.get(k, k) for k in keys)]) + " |",
         "|---" * (len(lead) + len(keys)) + "|"]
    for r in rows:
        L.append("| " + " | ".join([*(str(r[c]) for c in lead),
                                    *(fmt(r[k]) if k in r else "-" for k in keys)]) + " |")
    return L


def open_set_markdown(res) -> str:
    o = res["open_set"]
    L = ["# Batch shift detection, open set: CIFAR-10 classes 6-9 among classes 0-5", "",
         f"Encoder benchmarks/checkpoints/cifar10-cpu-c0to5.pt (backbone); {o['fit']}. "
         f"Per replicate, {o['m_calibration']} random ID test rows (classes 0-5) calibrate "
         "the scorer, fit Hotelling's F-law reference and form its permutation null; the "
         "batch takes other ID test rows and a Binomial(n, share) number of classes 6-9 "
         f"test rows. alpha = {res['config']['alpha']:g}; wall time "
         f"{res['wall_seconds'] / 60:.1f} min. Rejection rate in % (share 0: false "
         "alarms); batches per cell in the JSON.", ""]
    for r in o["rows"]:
        r["share"] = f"{100 * r['ood_share']:g}%"
    return "\n".join(L + table(o["rows"], ("n", "share"), REAL_TESTS))


def markdown(res) -> str:
    cfg, syn, real_ = res["config"], res["synthetic"], res["real"]
    L = [f"# Batch shift detection (gaussood.shift), alpha = {cfg['alpha']:g}", "",
         f"Configuration: {cfg['label']}. Wall time {res['wall_seconds'] / 60:.1f} min on "
         f"one core ({res['environment'].get('cpu', 'cpu')}); seed {cfg['seed']}. Rates "
         "in %. Binomial sd of a rate near 5%: 0.5 points at 2,000 batches, 0.7 at 1,000, "
         "1.3 at 300, 1.5 at 200. 'Marginal': a fresh fit / calibration set per batch "
         "(what the p-values guarantee). 'Conditional': one fit / calibration set, many "
         "batches (the rate one deployment sees): min / mean / max over the sets.", "",
         "## 1. Synthetic", "", "Conformal p-values, marginal. 'naive': the same "
         "p-values tested as independent U(0, 1) draws.", ""]
    L += table(syn["marginal"], ("m", "n", "batches"),
               ("ks", "fisher", "hc", "ks naive", "fisher naive", "hc naive"))
    L += ["", "Conformal p-values, conditional.", ""]
    L += table(syn["conditional"], ("m", "n", "sets", "batches_per_set"),
               ("ks", "fisher", "hc"), spread)
    par = syn["parametric"]
    L += ["", f"Parametric GaussianScorer('empirical', calibration='f') on Gaussian rows "
          f"(d = {cfg['parametric_d']}): the p-value tests with the null that models the "
          "fit's estimation error, 'naive' without it, Hotelling's F law. Marginal: a "
          "fresh fit per repetition, "
          f"{cfg['batches_per_fit']} batches of each size per fit.", ""]
    keys = ("ks", "fisher", "hc", "hotelling", "ks naive", "fisher naive", "hc naive")
    L += table([r for r in par if r["guarantee"] == "marginal"], ("n_fit", "n", "refits"), keys)
    L += ["", "Parametric, conditional (one fit, many batches).", ""]
    L += table([r for r in par if r["guarantee"] == "conditional"],
               ("n_fit", "n", "fits", "batches_per_fit"), keys, spread)
    L += ["", f"## 2. CIFAR-10 ID test batches ({cfg['encoder']}, backbone 256-d)", "",
          real_["fit"] + ".", "", "(a) As fitted: calibration from the train split, ID "
          "batches from the test split (a mismatch: the encoder was trained on the fit "
          "rows).", ""]
    keys = [k for k in real_["as_fitted"][0] if k not in ("n", "batches")]
    L += table(real_["as_fitted"], ("n", "batches"), keys)
    if real_.get("law_misfit") is not None:
        L += ["", f"The F-law fit's law_misfit_ (KS distance of its train rows' exact "
              f"in-sample p-values from uniform; 0 up to noise for Gaussian rows): "
              f"{real_['law_misfit']:.3f}. fit and shift.test warn about it. Its per-row "
              f"p-values flag {100 * real_['f_law_row_rate']:.1f}% of the test rows at "
              f"alpha = {cfg['alpha']}."]
    L += ["", f"(b) Held out, marginal: per replicate, {cfg['m_calibration']} random test "
          "rows calibrate the conformal scorer (split conformal), fit 'Hotelling F' (F "
          "law) and are the reference rows of 'Hotelling ref' (permutation null, against "
          "the train fit); the batches are up to "
          f"{cfg['null_batches_per_split']} disjoint batches of the other rows (they share "
          "the split, so the sd exceeds the binomial one). Batches per test in the JSON.",
          ""]
    L += table(real_["held_out"], ("n",), (*REAL_TESTS, "mmd"))
    c = real_["conditional"]
    L += ["", f"(c) Held out, conditional: {c['sets']} fixed splits of {c['m']} "
          f"calibration / reference rows, {c['batches_per_set']} batches of {c['n']} "
          f"each from the other {c['pool']} rows (batches of 1,000 would overlap too "
          "much on 10,000 test rows).", ""]
    L += table([c], ("m", "n"), REAL_TESTS, spread)
    L += ["", "## 3. Power (held-out calibration; rejection rate in %)", "",
          f"{cfg['power_batches']} batches per cell ({cfg['mmd_batches']} for the MMD peer: "
          f"RBF, median heuristic, {cfg['mmd_permutations']} permutations, "
          f"{cfg['mmd_reference']} reference rows).", ""]
    for n in cfg["batch_sizes"]:
        L += [f"Batches of {n}:", ""]
        L += table([r for r in real_["power"] if r["n"] == n], ("setting",),
                   (*REAL_TESTS, "mmd")) + [""]
    L += ["Median time per batch (ms; 'ref' with the Reference built):", ""]
    L += table([{"n": n, **t} for n, t in real_["ms_per_batch"].items()], ("n",),
               (*REAL_TESTS, "mmd"), lambda x: f"{x:.2f}")
    return "\n".join(L)


def figure(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, power = res["config"], res["real"]["power"]
    keys = ("ks", "fisher", "hc", "hotelling", "hotelling ref", "mmd")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, n in zip(axes[:2], cfg["batch_sizes"]):
        rows = [r for r in power if r["n"] == n and r["setting"].startswith("Fashion")]
        x = [100 * e for e in cfg["ood_shares"]]
        for k in keys:
            ax.plot(x, [100 * r[k] for r in rows], marker="o", label=NAMES[k])
        ax.set_xscale("log")
        ax.axhline(100 * cfg["alpha"], color="gray", lw=0.8, ls="--")
        ax.set(title=f"Fashion-MNIST rows in CIFAR-10 batches of {n}",
               xlabel="OOD share of the batch (%)", ylabel="alarms (%)")
        ax.legend(fontsize=7)
    names = list(SHIFTS)
    width = 0.14
    for i, k in enumerate(keys):
        vals = [100 * next(r[k] for r in power if r["n"] == max(cfg["batch_sizes"])
                           and r["setting"] == s) for s in names]
        axes[2].bar(np.arange(len(names)) + (i - 2.5) * width, vals, width, label=NAMES[k])
    axes[2].set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=7)
    axes[2].set(title=f"covariate shift, batches of {max(cfg['batch_sizes'])}",
                ylabel="alarms (%)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
