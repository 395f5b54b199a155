"""Cost of the feature space and of views, as ratios measured in one run.

    python benchmarks/speed_views.py            # ~1 min on one core

Scoring 40,000 x 256 float32 rows (synthetic Gaussian, decaying spectrum) with a
GaussianScorer fitted on 40,000 rows: ``normalize="l2"`` against the raw scorer
(target: within 1.2x), and Fisher's combination of two views (raw + L2) against one
view (target: within 2.2x); the three default views of ``gaussian_views`` are
reported beside them. Medians of 5 runs; one BLAS thread. Writes
benchmarks/results/speed_views.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results  # noqa: E402

from gaussood import GaussianScorer, PValueCombination, gaussian_views  # noqa: E402


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    wall = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    scale = 1.0 / np.sqrt(1.0 + np.arange(args.d))
    X = (rng.normal(size=(args.n, args.d)) * scale + 1.0).astype(np.float32)
    Xt = (rng.normal(size=(args.n, args.d)) * scale + 1.0).astype(np.float32)
    y = rng.integers(0, 10, size=args.n)
    detectors = {
        "raw": GaussianScorer(random_state=0),
        "l2": GaussianScorer(normalize="l2", random_state=0),
        "Fisher(raw, l2)": PValueCombination([GaussianScorer(), GaussianScorer(normalize="l2")],
                                             random_state=0),
        "gaussian_views() (3 views)": gaussian_views(random_state=0),
    }
    rows = {}
    with threadpool_limits(1):
        for name, det in detectors.items():
            det.fit(X, y)
            # p-values and decisions: what a filter computes per row
            med, times = median_seconds(lambda: det.score_pvalue_decision(Xt), args.repeats)
            rows[name] = {"seconds": med, "runs": times}
    one = rows["raw"]["seconds"]
    ratios = {"l2 / raw": rows["l2"]["seconds"] / one,
              "Fisher(raw, l2) / raw": rows["Fisher(raw, l2)"]["seconds"] / one,
              "3 views / raw": rows["gaussian_views() (3 views)"]["seconds"] / one}
    targets = {"l2 / raw": 1.2, "Fisher(raw, l2) / raw": 2.2}
    lines = [f"Scoring {args.n:,} x {args.d} float32 rows (p-values and decisions, "
             f"`score_pvalue_decision`), median of {args.repeats}, one BLAS thread.", "",
             "| detector | seconds | rows/s |", "|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds']:.3f} | {args.n / r['seconds']:,.0f} |")
    lines += ["", "| ratio | measured | target | verdict |", "|---|---|---|---|"]
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = "-" if target is None else ("PASS" if value <= target else "FAIL")
        lines.append(f"| {name} | {value:.2f}x | {'-' if target is None else f'<= {target}x'} "
                     f"| {verdict} |")
    write_results("speed_views", {
        "config": vars(args), "rows": rows, "ratios": ratios, "targets": targets,
        "environment": environment(), "wall_seconds": time.perf_counter() - wall},
        "\n".join(lines))


if __name__ == "__main__":
    main()
