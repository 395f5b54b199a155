"""Scale benchmark: gaussood.dask fit and score throughput against Dask worker processes.

What it measures, on one machine:

* a ``.npy`` file of ``--rows`` (default 20,000,000) x ``--dim`` (256) float32
  rows on disk (20 GB; SYNTHETIC: a Gaussian with a decaying spectrum in a
  random rotation, written chunk by chunk and reused by later runs with the
  same shape and seed);
* for 1 and 2 Dask worker processes (``distributed.LocalCluster``,
  ``threads_per_worker=1``, one BLAS/OpenMP thread each): ``gaussood.dask.fit``
  of a ``GaussianScorer`` (Ledoit-Wolf, parametric "f" calibration: one pass)
  and ``gaussood.dask.score_samples`` over every row (summed on the workers,
  so no result is gathered), both read chunk by chunk from the file
  (``gaussood.dask.from_npy``); throughput in rows/s and each worker's peak
  resident memory (VmHWM, reset before each step);
* the in-memory reference on the first ``--inmem-rows`` (4,000,000: 4 GB)
  rows: ``np.load`` into memory, ``GaussianScorer.fit`` and ``score_samples``
  with one BLAS thread, and the process's peak memory;
* what the per-core rates predict for 10^9 rows on P cores (linear scaling,
  using the measured 1 -> 2 worker efficiency; storage bandwidth aside).

Reading the numbers: the file is read from the page cache where it fits
(this machine: 23 GB of RAM for a 20 GB file, so mostly from disk); the
worker count is capped by the cores (2 here). Run it while nothing else runs:
the load averages before and after each step are recorded.

Run::

    PYTHONPATH=. python benchmarks/scale.py            # full run: 20 M rows, ~8 min on 2 cores here
    PYTHONPATH=. python benchmarks/scale.py --quick    # smoke run: 200,000 rows, < 1 min

The full run writes ``benchmarks/results/scale.json`` and ``scale.md``; the
quick run writes ``scale_quick.json`` / ``scale_quick.md``. The data file lives
in ``--data-dir`` (default ``$TMPDIR/gaussood_scale``); ``--delete-data``
removes it at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, environment, write_results  # noqa: E402

from gaussood._threads import blas_thread_env, limit_blas_threads, pin_blas_threads  # noqa: E402

SEED = 20260201
WRITE_ROWS = 262_144  # rows generated and written at a time


# ------------------------------------------------------------------ memory
def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in bytes; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (VmHWM; ru_maxrss elsewhere)."""
    peak = _status_bytes("VmHWM")
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak


def current_rss() -> int:
    return _status_bytes("VmRSS") or 0


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -------------------------------------------------------------------- data
def make_data(path: Path, rows: int, dim: int) -> dict:
    """Write (or reuse) rows x dim float32 Gaussian rows with a decaying spectrum."""
    if path.exists():
        mm = np.load(path, mmap_mode="r")
        if mm.shape == (rows, dim) and mm.dtype == np.float32:
            return {"path": str(path), "written_s": None, "reused": True}
        del mm
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mix = (q / np.sqrt(1.0 + np.arange(dim))[:, None]).astype(np.float32)
    shift = rng.normal(size=dim).astype(np.float32)
    tmp = path.with_suffix(".partial.npy")
    t0 = time.perf_counter()
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
    with limit_blas_threads(1):
        for start in range(0, rows, WRITE_ROWS):
            stop = min(start + WRITE_ROWS, rows)
            mm[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32) @ mix + shift
    mm.flush()
    del mm
    os.replace(tmp, path)
    return {"path": str(path), "written_s": round(time.perf_counter() - t0, 1), "reused": False}


# --------------------------------------------------------------- dask runs
def run_dask(path: Path, n_workers: int, chunk_rows: int) -> dict:
    from distributed import Client, LocalCluster

    import gaussood.dask as gd
    from gaussood import GaussianScorer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env=blas_thread_env(1),
                               silence_logs=40)
    out = {"workers": n_workers}
    with cluster, Client(cluster) as client:
        gd.pin_blas_threads(client, 1)
        X = gd.from_npy(path, chunk_rows)
        client.run(lambda: __import__("gaussood.dask"))  # imports outside the timings
        n = X.shape[0]

        for step in ("fit", "score"):
            resettable = all(client.run(reset_peak_rss).values())
            before = load()
            t0 = time.perf_counter()
            if step == "fit":
                scorer = gd.fit(GaussianScorer(calibration="f"), X)
            else:
                total = float(gd.score_samples(scorer, X).sum().compute())
            seconds = time.perf_counter() - t0
            peaks = client.run(peak_rss)
            out[step] = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
                         "peak_rss_per_worker_mb": sorted(round(p / 2**20) for p in peaks.values()),
                         "peak_is_since_step_start": resettable,
                         "load_before": before, "load_after": load()}
        out["check"] = {"n_samples_fit": scorer.n_samples_fit_, "shrinkage": scorer.shrinkage_,
                        "mean_score": total / n}
    return out


def run_in_memory(path: Path, rows: int) -> dict:
    from gaussood import GaussianScorer

    gc.collect()
    resettable = reset_peak_rss()
    start_rss = current_rss()
    out = {"rows": rows, "peak_is_since_step_start": resettable, "load_before": load()}
    with limit_blas_threads(1):
        t0 = time.perf_counter()
        X = np.array(np.load(path, mmap_mode="r")[:rows])
        out["load_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        scorer = GaussianScorer(calibration="f").fit(X)
        seconds = time.perf_counter() - t0
        out["fit"] = {"seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}
        t0 = time.perf_counter()
        scores = scorer.score_samples(X)
        seconds = time.perf_counter() - t0
        out["score"] = {"seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}
    out["peak_rss_mb"] = round(peak_rss() / 2**20)
    out["peak_rss_increase_mb"] = round((peak_rss() - start_rss) / 2**20)
    out["load_after"] = load()
    out["check"] = {"mean_score": float(scores.mean())}
    del X, scores
    return out


# -------------------------------------------------------------- prediction
def predict(runs: list[dict], dim: int, target_rows: float = 1e9) -> dict:
    """Time for target_rows on P cores from the per-core (1 worker) rates."""
    by_workers = {r["workers"]: r for r in runs}
    one = by_workers.get(1)
    if one is None:
        return {}
    pred = {"rows": target_rows, "bytes": target_rows * dim * 4, "cores": {}}
    for step in ("fit", "score"):
        rate = one[step]["rows_per_s"]
        eff = None
        if 2 in by_workers:
            eff = by_workers[2][step]["rows_per_s"] / (2 * rate)
        pred[f"{step}_rows_per_s_per_core"] = rate
        pred[f"{step}_efficiency_2_workers"] = None if eff is None else round(eff, 3)
        pred[f"{step}_mb_per_s_per_core"] = round(rate * dim * 4 / 2**20, 1)
    for cores in (2, 16, 64, 256, 1024):
        row = {}
        for step in ("fit", "score"):
            rate = pred[f"{step}_rows_per_s_per_core"]
            eff = pred[f"{step}_efficiency_2_workers"] or 1.0
            row[f"{step}_minutes"] = round(target_rows / (cores * rate * min(eff, 1.0)) / 60, 1)
        row["read_gb_per_s_needed_for_fit"] = round(
            cores * pred["fit_rows_per_s_per_core"] * min(pred["fit_efficiency_2_workers"] or 1.0, 1.0)
            * dim * 4 / 1e9, 2)
        pred["cores"][cores] = row
    return pred


def table(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"# Scale: gaussood.dask on {cfg['rows']:,} x {cfg['dim']} float32 rows from a .npy on disk",
        "",
        f"SYNTHETIC data; chunks of {cfg['chunk_rows']:,} rows; one thread and one BLAS "
        f"thread per worker process; CPU: {result['environment'].get('cpu')} "
        f"({result['environment'].get('cpu_count')} cores). `GaussianScorer` (Ledoit-Wolf, "
        "'f' calibration): fit = one pass of per-chunk moments + tree reduction; score = "
        "`score_samples` of every row, summed on the workers.",
        "",
        "| run | rows | fit rows/s | score rows/s | peak memory per worker (fit / score) | load avg before |",
        "|---|---:|---:|---:|---|---|",
    ]
    for run in result["dask"]:
        lines.append(
            f"| Dask, {run['workers']} worker process{'es' if run['workers'] > 1 else ''} | "
            f"{cfg['rows']:,} | {run['fit']['rows_per_s']:,} | {run['score']['rows_per_s']:,} | "
            f"{run['fit']['peak_rss_per_worker_mb']} / {run['score']['peak_rss_per_worker_mb']} MB | "
            f"{run['fit']['load_before']} |")
    mem = result.get("in_memory")
    if mem:
        lines.append(
            f"| in memory, 1 thread (reference) | {mem['rows']:,} | {mem['fit']['rows_per_s']:,} | "
            f"{mem['score']['rows_per_s']:,} | +{mem['peak_rss_increase_mb']:,} MB (process, data included) | "
            f"{mem['load_before']} |")
    pred = result.get("prediction")
    if pred:
        lines += [
            "",
            f"## What the per-core rates predict for {pred['rows']:.0e} rows ({pred['bytes'] / 1e12:.1f} TB)",
            "",
            f"Per core (1 worker): fit {pred['fit_rows_per_s_per_core']:,} rows/s "
            f"({pred['fit_mb_per_s_per_core']} MB/s), score {pred['score_rows_per_s_per_core']:,} "
            f"rows/s ({pred['score_mb_per_s_per_core']} MB/s); 2-worker efficiency: fit "
            f"{pred['fit_efficiency_2_workers']}, score {pred['score_efficiency_2_workers']}. "
            "Linear scaling at that efficiency, if storage delivers the bandwidth in the last column:",
            "",
            "| cores | fit (min) | score (min) | read bandwidth needed by the fit (GB/s) |",
            "|---:|---:|---:|---:|",
        ]
        for cores, row in pred["cores"].items():
            lines.append(f"| {cores} | {row['fit_minutes']} | {row['score_minutes']} | "
                         f"{row['read_gb_per_s_needed_for_fit']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--inmem-rows", type=int, default=4_000_000,
                        help="rows of the in-memory reference (0: skip it)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "gaussood_scale")
    parser.add_argument("--delete-data", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 200,000 rows, 100,000 in memory, writes scale_quick.*")
    parser.add_argument("--out", default=None, help="result name (default scale / scale_quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.inmem_rows, args.chunk_rows = 200_000, 100_000, 16_384
    name = args.out or ("scale_quick" if args.quick else "scale")
    pin_blas_threads(1)  # the client process: finalisation and the in-memory reference

    path = args.data_dir / f"scale_{args.rows}x{args.dim}_{SEED}.npy"
    print(f"data: {path}", flush=True)
    data = make_data(path, args.rows, args.dim)
    result = {"config": {"rows": args.rows, "dim": args.dim, "chunk_rows": args.chunk_rows,
                         "workers": args.workers, "inmem_rows": args.inmem_rows,
                         "seed": SEED, "quick": args.quick},
              "data": data, "environment": environment(), "dask": []}
    try:
        import dask
        import distributed

        result["environment"].update({"dask": dask.__version__,
                                      "distributed": distributed.__version__})
        for workers in args.workers:
            print(f"dask: {workers} worker(s)", flush=True)
            result["dask"].append(run_dask(path, workers, args.chunk_rows))
        if args.inmem_rows:
            print(f"in memory: {min(args.inmem_rows, args.rows):,} rows", flush=True)
            result["in_memory"] = run_in_memory(path, min(args.inmem_rows, args.rows))
        result["prediction"] = predict(result["dask"], args.dim)
    finally:
        if args.delete_data:
            path.unlink(missing_ok=True)
    write_results(name, result, table(result), RESULTS)


if __name__ == "__main__":
    main()
