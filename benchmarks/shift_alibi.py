"""alibi-detect's MMDDrift and KSDrift as peers of gaussood.shift, on the shift benchmark's
embeddings and batch design (issue 23 item 3).

Result: benchmarks/results/shift_alibi.md (configuration, versions, hardware and wall time
in shift_alibi.json); docs/shift.md compares it with benchmarks/results/shift.md.

Design (benchmarks/shift.py's real-data part, its embeddings exported with ``--export``):
CIFAR-10 test embeddings of cifar10-cpu.pt (256-d). Per replicate a fresh random split of
the 10,000 test rows: KSDrift's reference is the 8,000 calibration rows (gaussood's
tests calibrate on the same number), MMDDrift's the first 500 of them (the benchmark's own
MMD); one batch of each size from the other rows, ID only (false alarms) and with a
Binomial(n, share) number of Fashion-MNIST rows (power). Covariate shifts: the seed
split's reference rows against batches of its 2,000 shifted pool rows. The per-batch time
is that of ``predict`` (the detector is built once per split, not timed per batch).

Detectors as alibi-detect's docs configure them: ``KSDrift(x_ref, p_val=alpha)`` (per
feature two-sample KS, Bonferroni correction) and ``MMDDrift(x_ref, backend='pytorch',
p_val=alpha, n_permutations=100)`` (GaussianRBF kernel, bandwidth from the reference rows
by the median heuristic). One torch thread.

alibi-detect 0.13.0 needs numpy < 2, so it runs in its own venv, not the project's:

    python3 -m venv ../alibi-venv
    ../alibi-venv/bin/pip install 'alibi-detect[torch]==0.13.0'
    python benchmarks/shift.py --export ../alibi-export          # the project venv
    PYTHONPATH=. ../alibi-venv/bin/python benchmarks/shift_alibi.py ../alibi-export

(``PYTHONPATH=.``: benchmarks/_common.py imports gaussood, which runs on numpy 1.26.)
``--quick``: a smoke run.
"""

from __future__ import annotations

import argparse
import json
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

CONFIG = {
    "seed": 0, "ks_null_batches": 200, "mmd_null_batches": 50, "ks_power_batches": 50,
    "mmd_power_batches": {"100": 50, "1000": 20}, "ood_shares": [0.02, 0.05, 0.1],
    "shifts": ["jpeg q30", "blur r0.5", "noise sd8"], "label": "full",
}
DETECTORS = ("KSDrift", "MMDDrift")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load(folder):
    """(shift.py's exported configuration, {name: embeddings}, the seed split)."""
    folder = Path(folder)
    if not (folder / "export.json").is_file():
        raise SystemExit(f"{folder / 'export.json'} not found: run "
                         f"'python benchmarks/shift.py --export {folder}' first")
    meta = json.loads((folder / "export.json").read_text())
    emb = {name: np.load(folder / file) for name, file in meta["files"].items()}
    return meta, emb, np.load(folder / meta["split"])


class Detectors:
    """alibi-detect's KSDrift (on ``ks_ref``) and MMDDrift (on ``mmd_ref``) for one split."""

    def __init__(self, ks_ref, mmd_ref, alpha, permutations, with_mmd):
        from alibi_detect.cd import KSDrift, MMDDrift

        self.det = {"KSDrift": KSDrift(ks_ref, p_val=alpha)}
        if with_mmd:
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # torch.jit.script
                self.det["MMDDrift"] = MMDDrift(mmd_ref, backend="pytorch", p_val=alpha,
                                                n_permutations=permutations)
            self.mmd_init_s = time.perf_counter() - t

    def run(self, X, names, times, hits, counts):
        for name in names:
            t = time.perf_counter()
            alarm = self.det[name].predict(X)["data"]["is_drift"]
            times.setdefault(name, []).append(time.perf_counter() - t)
            hits[name] = hits.get(name, 0) + int(alarm)
            counts[name] = counts.get(name, 0) + 1


def measure(cfg, exp, emb, split, rng):
    """{'null': rows, 'power': rows, 'ms_per_batch': {n: {detector: ms}}}."""
    X, fashion = emb["test"], emb["fashion"]
    m, alpha, sizes = exp["m_calibration"], exp["alpha"], exp["batch_sizes"]
    n_mmd, perms = exp["mmd_reference"], exp["mmd_permutations"]
    cells = {(n, e): ({}, {}) for n in sizes for e in [0.0, *cfg["ood_shares"]]}
    times = {n: {} for n in sizes}
    init_s = []
    mmd_power = {int(k): v for k, v in cfg["mmd_power_batches"].items()}
    for r in range(cfg["ks_null_batches"]):
        perm = rng.permutation(X.shape[0])
        cal = perm[:m]
        need_mmd = r < max(cfg["mmd_null_batches"], *mmd_power.values())
        det = Detectors(X[cal], X[cal[:n_mmd]], alpha, perms, need_mmd)
        if need_mmd:
            init_s.append(det.mmd_init_s)
        for n in sizes:
            for e in [0.0, *cfg["ood_shares"]]:
                if e and r >= cfg["ks_power_batches"] and r >= mmd_power[n]:
                    continue
                names = [d for d, on in (
                    ("KSDrift", not e or r < cfg["ks_power_batches"]),
                    ("MMDDrift", r < (mmd_power[n] if e else cfg["mmd_null_batches"])))
                    if on]
                k_ood = rng.binomial(n, e) if e else 0
                rows = np.vstack([X[perm[m:m + n - k_ood]],
                                  fashion[rng.choice(fashion.shape[0], k_ood, replace=False)]])
                det.run(rows, names, times[n], *cells[n, e])
        if r % 25 == 24:
            log(f"replicate {r + 1} of {cfg['ks_null_batches']}")
    out = {"null": [], "power": []}
    for (n, e), (hits, counts) in cells.items():
        row = {"n": n, **{k: v / counts[k] for k, v in hits.items()}, "batches": counts}
        if e:
            out["power"].append({"setting": f"Fashion-MNIST {100 * e:g}%", **row})
        else:
            out["null"].append(row)
        log(f"{'power' if e else 'null'} n={n} share={e}: {row}")
    cal = np.sort(split[:m])   # covariate shifts: the seed split, as benchmarks/shift.py
    det = Detectors(X[cal], X[split[:n_mmd]], alpha, perms, True)
    for n in sizes:
        for name in cfg["shifts"]:
            Xs, hits, counts = emb[name], {}, {}
            for b in range(max(cfg["ks_power_batches"], mmd_power[n])):
                names = [d for d, on in (("KSDrift", b < cfg["ks_power_batches"]),
                                         ("MMDDrift", b < mmd_power[n])) if on]
                det.run(Xs[rng.choice(Xs.shape[0], n, replace=False)], names, times[n],
                        hits, counts)
            out["power"].append({"setting": name, "n": n,
                                 **{k: v / counts[k] for k, v in hits.items()},
                                 "batches": counts})
            log(f"power n={n} {name}: {out['power'][-1]}")
    out["ms_per_batch"] = {n: {k: 1000 * float(np.median(v)) for k, v in times[n].items()}
                           for n in sizes}
    out["mmd_init_ms"] = 1000 * float(np.median(init_s + [det.mmd_init_s]))
    return out


def _pct(x):
    return "" if x is None else f"{100 * x:.1f}"


def markdown(res, gaussood=None):
    """The table; ``gaussood``: the committed shift.json's 'real' part, for the same cells."""
    cfg, exp, out = res["config"], res["export_config"], res["results"]
    env = res["environment"]
    cols = ("KS", "Fisher", "HC", "Hotelling F", "Hotelling ref")
    keys = ("ks", "fisher", "hc", "hotelling", "hotelling ref")
    g_null = {r["n"]: r for r in (gaussood or {}).get("held_out", [])}
    g_pow = {(r["n"], r["setting"]): r for r in (gaussood or {}).get("power", [])}
    lines = [
        f"# alibi-detect drift detectors on the shift benchmark's embeddings, alpha = "
        f"{exp['alpha']}", "",
        f"Configuration: {cfg['label']}. alibi-detect {env.get('alibi-detect')}, numpy "
        f"{env['numpy']}, scipy {env['scipy']}, torch {env.get('torch')} "
        f"({env.get('torch_threads')} thread); {env['cpu']}, one core; seed {cfg['seed']}; "
        f"wall time {res['wall_seconds'] / 60:.1f} min. Embeddings: benchmarks/shift.py "
        f"--export ({exp['encoder']}, CIFAR-10 test rows). KSDrift: per-feature KS, "
        f"Bonferroni, reference = the {exp['m_calibration']} calibration rows of each "
        f"split. MMDDrift: pytorch backend, GaussianRBF (median heuristic on the reference), "
        f"{exp['mmd_permutations']} permutations, reference = {exp['mmd_reference']} of "
        "those rows. Rates in %; batches per cell in the columns 'batches' "
        "(KSDrift / MMDDrift). gaussood columns: the committed benchmarks/results/shift.md "
        "(held-out calibration, m = 8000; its own batches of the same design).", "",
        "## False alarms (ID batches, a fresh split per batch)", "",
        "| n | batches | KSDrift | MMDDrift | " + " | ".join(f"gaussood {c}" for c in cols)
        + " |", "|---" * (4 + len(cols)) + "|"]
    for r in out["null"]:
        g = g_null.get(r["n"], {})
        lines.append(f"| {r['n']} | {r['batches'].get('KSDrift')} / "
                     f"{r['batches'].get('MMDDrift')} | {_pct(r.get('KSDrift'))} | "
                     f"{_pct(r.get('MMDDrift'))} | "
                     + " | ".join(_pct(g.get(k)) for k in keys) + " |")
    lines += ["", "## Power (rejection rate in %)", "",
              "| setting | n | batches | KSDrift | MMDDrift | "
              + " | ".join(f"gaussood {c}" for c in cols) + " |",
              "|---" * (5 + len(cols)) + "|"]
    for r in sorted(out["power"], key=lambda r: r["n"]):
        g = g_pow.get((r["n"], r["setting"]), {})
        lines.append(f"| {r['setting']} | {r['n']} | {r['batches'].get('KSDrift')} / "
                     f"{r['batches'].get('MMDDrift')} | {_pct(r.get('KSDrift'))} | "
                     f"{_pct(r.get('MMDDrift'))} | "
                     + " | ".join(_pct(g.get(k)) for k in keys) + " |")
    lines += ["", "## Median time per batch (ms; `predict` only)", "",
              "| n | KSDrift | MMDDrift |", "|---|---|---|"]
    for n, t in out["ms_per_batch"].items():
        lines.append(f"| {n} | {t['KSDrift']:.1f} | {t['MMDDrift']:.1f} |")
    lines += ["", f"Building MMDDrift (bandwidth and reference kernel matrix, "
              f"{exp['mmd_reference']} rows): {out['mmd_init_ms']:.0f} ms (median)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export", type=Path, help="the folder written by "
                    "'python benchmarks/shift.py --export DIR'")
    ap.add_argument("--quick", action="store_true", help="few batches (a smoke run)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    import alibi_detect
    import torch

    torch.set_num_threads(1)
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(ks_null_batches=6, mmd_null_batches=3, ks_power_batches=3,
                   mmd_power_batches={"100": 2, "1000": 2}, label="quick (a smoke run)")
    start = time.perf_counter()
    exp, emb, split = load(args.export)
    torch.manual_seed(cfg["seed"])   # MMDDrift's permutations
    env = {**environment(), "alibi-detect": alibi_detect.__version__,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    res = {"config": cfg, "export_config": exp["config"], "environment": env,
           "results": measure(cfg, exp["config"], emb, split,
                              np.random.default_rng(cfg["seed"]))}
    res["wall_seconds"] = time.perf_counter() - start
    committed = RESULTS / "shift.json"
    gaussood = json.loads(committed.read_text())["real"] if committed.is_file() else None
    write_results("shift_alibi" + ("_quick" if args.quick else ""), res,
                  markdown(res, gaussood), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
