"""Gaussianity in the theory's space: raw, L2-normalised and centred-L2 features.

    python benchmarks/gaussianity_space.py      # ~3 min on one core (make gaussianity)

InfoNCE compares embeddings by cosine similarity, so the paper's Gaussian law is a
statement about the normalised representation. For each encoder (CIFAR-10: the 89-
and 178-epoch runs, the regulariser twin, the SupCon open-set encoder; Fashion-MNIST:
plain, regularised and the two rotation-negatives encoders the bench ships), layer
(backbone, head) and space, ``gaussood.diagnostics.diagnose`` on 5,000 held-out test
images of the encoder's own ID classes, beside two references of the same n and d:
  * "Gaussian": an exact Gaussian sample with the features' mean and covariance
    (diagnose's own reference), for every space;
  * for the normalised spaces, "sphere": the same Gaussian reference sample
    normalised the same way (what the features would look like if the raw ones were
    exactly Gaussian), and "uniform": points uniform on the sphere (DESIGN.md: at
    small d even those fail tests that large-d spheres pass).
Writes benchmarks/results/gaussianity_space.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results  # noqa: E402

from gaussood._space import l2_rows  # noqa: E402
from gaussood.deep import extract_embeddings, load_dataset  # noqa: E402
from gaussood.diagnostics import diagnose  # noqa: E402

HERE = Path(__file__).resolve().parent
CKPT = HERE / "checkpoints"
OPEN = (0, 1, 2, 3, 4, 5)  # the open-set encoders' ID classes
ENCODERS = {  # label -> (file, dataset, ID classes or None)
    "CIFAR-10 89 epochs (cifar10-cpu)": ("cifar10-cpu.pt", "cifar10", None),
    "CIFAR-10 twin, plain (8 ep.)": ("cifar10-twin-plain.pt", "cifar10", None),
    "CIFAR-10 twin, regulariser (8 ep.)": ("cifar10-twin-reg.pt", "cifar10", None),
    "CIFAR-10 178 epochs, shipped (cifar10-cpu-2x)": ("cifar10-cpu-2x.pt", "cifar10", None),
    "CIFAR-10 classes 0-5, SupCon 8,680 steps (open-set)": (
        "cifar10-cpu-c0to5-supcon-2x.pt", "cifar10", OPEN),
    "Fashion-MNIST plain": ("fashion-mnist-cpu.pt", "fashion-mnist", None),
    "Fashion-MNIST regulariser": ("fashion-mnist-cpu-regularised.pt", "fashion-mnist", None),
    "Fashion-MNIST rotation negatives (fashion-mnist setting)": (
        "fashion-mnist-cpu-rotneg.pt", "fashion-mnist", None),
    "Fashion-MNIST classes 0-5, rotation negatives (open-set)": (
        "fashion-mnist-cpu-c0to5-rotneg.pt", "fashion-mnist", OPEN),
}
SHOWN = ("norm_cv_centered", "ad_pass_coordinates", "ad_pass_projections")


def transform(X, space, mean):
    if space == "raw":
        return X
    return l2_rows(X - mean) if space == "center-l2" else l2_rows(X)


def numbers(report):
    return {k: float(getattr(report, k)) for k in SHOWN}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-eval", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    rows, data = [], {}
    for label, (file, dataset, classes) in ENCODERS.items():
        path = CKPT / file
        if not path.is_file():
            print(f"skipped {label}: {path} not found", file=sys.stderr)
            continue
        if (dataset, classes) not in data:  # the encoder's own ID classes only
            data[dataset, classes] = load_dataset(dataset, "test", n=args.n_eval,
                                                  seed=args.seed, classes=classes)
        for layer in ("backbone", "head"):
            raw = extract_embeddings(path, data[dataset, classes], layer=layer,
                                     progress=False).astype(np.float64)
            mean = raw.mean(axis=0)
            gauss = rng.multivariate_normal(mean, np.cov(raw, rowvar=False), size=raw.shape[0],
                                            method="eigh")
            uniform = l2_rows(rng.normal(size=raw.shape))
            for space in ("raw", "l2", "center-l2"):
                rep = diagnose(transform(raw, space, mean), max_samples=args.n_eval,
                               seed=args.seed)
                row = {"encoder": label, "file": file, "classes": classes,
                       "layer": layer, "space": space,
                       "n": rep.n, "d": rep.d, **numbers(rep),
                       "reference_gaussian": {k: float(rep.reference[k]) for k in SHOWN}}
                if space != "raw":
                    row["reference_sphere"] = numbers(diagnose(
                        transform(gauss, space, gauss.mean(axis=0)), max_samples=args.n_eval,
                        seed=args.seed, reference=False))
                    row["reference_uniform"] = numbers(diagnose(
                        uniform, max_samples=args.n_eval, seed=args.seed, reference=False))
                rows.append(row)
                print(f"{label} {layer} {space}: AD coords "
                      f"{100 * row['ad_pass_coordinates']:.1f}%", file=sys.stderr, flush=True)

    def pct(x):
        return f"{100 * x:.1f}%"

    lines = [f"Diagnostics on {args.n_eval:,} held-out test images per encoder (seed "
             f"{args.seed}); tests at 5%. Reference columns, same n and d: exact Gaussian "
             "with the features' mean and covariance (G); for normalised spaces that "
             "Gaussian sample normalised the same way (S) and points uniform on the sphere "
             "(U). Norm CV is of the centred norms.", "",
             "| encoder | layer | space | norm CV (G / S) | AD pass, coordinates (G / S / U) "
             "| AD pass, random projections (G / S / U) |", "|---|---|---|---|---|---|"]
    for r in rows:
        g, s, u = (r["reference_gaussian"], r.get("reference_sphere"),
                   r.get("reference_uniform"))

        def refs(key):
            out = [pct(g[key])] + ([pct(s[key]), pct(u[key])] if s else [])
            return " / ".join(out)
        cv = f"{r['norm_cv_centered']:.3f} ({g['norm_cv_centered']:.3f}" + (
            f" / {s['norm_cv_centered']:.3f})" if s else ")")
        lines.append(f"| {r['encoder']} | {r['layer']} | {r['space']} | {cv} | "
                     f"{pct(r['ad_pass_coordinates'])} ({refs('ad_pass_coordinates')}) | "
                     f"{pct(r['ad_pass_projections'])} ({refs('ad_pass_projections')}) |")
    wall = time.perf_counter() - start
    lines += ["", f"Command: `python benchmarks/gaussianity_space.py`; {wall / 60:.1f} min."]
    write_results("gaussianity_space", {"config": vars(args), "rows": rows,
                                        "environment": environment(), "wall_seconds": wall},
                  "\n".join(lines))


if __name__ == "__main__":
    main()
