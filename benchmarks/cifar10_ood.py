"""CIFAR-10 OOD benchmark (the README's main job).

    python benchmarks/cifar10_ood.py            # default: 3 seeds, <= 45 min on 2 CPU cores
    python benchmarks/cifar10_ood.py --quick    # < 5 min, run by CI
    python benchmarks/cifar10_ood.py --help

Writes benchmarks/results/cifar10_ood{,_quick}.json, .md and _hist.png (atomically).

Settings, each one call of ``gaussood.deep.evaluate`` (``--settings``):
  * cifar10: the encoder trained on all of CIFAR-10; OOD sets are whatever is
    found locally among SVHN, CIFAR-100, Fashion-MNIST, MNIST, plus two noise
    sets (uniform, Gaussian). SVHN and CIFAR-100 rows appear only when their
    files were read.
  * open-set: an encoder trained on CIFAR-10 classes 0-5 only; ID = classes
    0-5, near-OOD = test images of classes 6-9.
  * fashion-mnist: ID = Fashion-MNIST (an encoder the CPU trains to its plateau);
    OOD = CIFAR-10 test in grayscale, MNIST when present, the two noise sets.
  * fashion-open-set: an encoder trained on Fashion-MNIST classes 0-5; ID =
    classes 0-5, near-OOD = test images of classes 6-9.
Every image (ID and OOD) goes through JPEG q75, the compression of the CIFAR-10
archive, so no detector can key on compression artefacts. Each seed draws new
random subsets: the ID images the scorers are fitted on, the held-out ID test
images and the OOD images (and the noise); the encoders are fixed (one
training run each), which the report states. Beside gaussood's scorers run the
peers: pytorch-ood's Mahalanobis and KNN, scikit-learn's EllipticEnvelope and LOF.
The encoders are never trained here: a missing file is an error that says how to
train it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from gaussood._atomic import atomic_path
from gaussood._env import environment
from gaussood.bench_settings import OOD_SETS, SETTINGS, pool, quick, held_out_pool
from gaussood.cli.options import add_calibration_flag
from gaussood.deep.evaluate import OODSet, dataset_loader, evaluate, log

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHECKPOINTS = HERE / "checkpoints"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from _common import write_results  # noqa: E402
from peers import peers as peer_table  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="gaussood bench", description="CIFAR-10 OOD benchmark: every gaussood scorer and "
        "its peers on the same embeddings; prints a Markdown table and writes JSON + figure.")
    p.add_argument("--root", default=None, help="data folder (default: $GAUSSOOD_DATA or "
                   "~/.cache/gaussood/data)")
    for setting, spec in SETTINGS.items():
        p.add_argument(encoder_flag(setting), type=Path, default=CHECKPOINTS / spec.encoder,
                       help=f"encoder file of the {setting} setting (made by: "
                            f"{spec.train_hint})")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS),
                   default=["cifar10", "open-set", "fashion-mnist", "fashion-open-set"],
                   help="settings to run; a setting whose encoder file is missing is an error "
                        "when named here, and skipped (with a note) when left at the default")
    p.add_argument("--ood", nargs="+", default=list(OOD_SETS), choices=list(OOD_SETS),
                   help="OOD sets to try (missing files are reported and skipped)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download missing SVHN / CIFAR-100 / MNIST")
    p.add_argument("--layer", default="backbone", choices=["backbone", "head"])
    p.add_argument("--views", default=None, choices=["flip", "flip-crop", "rot4"],
                   help="test-time views (TTA): features averaged over each image and its "
                        "mirror (flip), also a small centre crop and its mirror "
                        "(flip-crop), or its 4 quarter turns (rot4), for every set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-fit", type=int, default=40_000, help="ID train images per seed")
    p.add_argument("--n-eval", type=int, default=5_000,
                   help="held-out ID test images and images per OOD set, per seed")
    p.add_argument("--alpha", type=float, default=0.05)
    add_calibration_flag(p)
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
        args.seeds, sizes = quick(args.seeds, n_fit=args.n_fit, n_eval=args.n_eval,
                                  ee_max=args.ee_max, lof_max=args.lof_max)
        vars(args).update(sizes)
    if args.n_fit < 100 or args.n_eval < 100:
        p.error("--n-fit and --n-eval must be at least 100.")
    if not 0 < args.alpha < 1:
        p.error("--alpha must lie in (0, 1).")
    args.name = args.name or ("cifar10_ood_quick" if args.quick else "cifar10_ood")
    return args


def encoder_flag(setting: str) -> str:
    return "--encoder" if setting == "cifar10" else f"--{setting}-encoder"


def missing_encoder(path: Path, setting: str) -> str:
    """Why a setting cannot run, and how to train its encoder."""
    return (f"encoder file {path} not found (setting {setting}). Train it first: "
            f"{SETTINGS[setting].train_hint}; or pass {encoder_flag(setting)} PATH, or leave the "
            "setting out with --settings.")


def gray_cifar10(root, n):
    """CIFAR-10 test images in grayscale (ITU-R 601 luma, repeated on 3 channels)."""
    from gaussood.deep import load_dataset

    data = load_dataset("cifar10", "test", root=root, n=n)
    luma = np.rint(data.images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    gray = np.repeat(luma.astype(np.uint8)[..., None], 3, axis=3)
    return data._derive(gray, np.full(len(gray), -1, np.int64),
                        "converted to grayscale (luma), labels dropped")


def run_setting(setting, encoder, args, root):
    """One ``evaluate`` call: every gaussood scorer and every peer on the same embeddings."""
    from gaussood.deep import jpeg_reencode, load_dataset

    id_name, classes = SETTINGS[setting][:2]
    id_label = "CIFAR-10" if id_name == "cifar10" else "Fashion-MNIST"

    def id_set(split, n, classes=classes):
        return load_dataset(id_name, split, root=root, classes=classes, n=n,
                            jpeg_quality=75)  # a no-op on the CIFAR-10 q75 archive

    n_test = held_out_pool(args.n_eval, args.calibrate_held_out, args.quick)
    if classes is not None:
        ood = {f"{id_name}-classes-6-9": OODSet(id_set("test", n_test, [6, 7, 8, 9]), "near",
                                                f"{id_label} test, classes 6-9 (open-set)")}
    else:
        ood = {}
        keys = args.ood if setting == "cifar10" else SETTINGS[setting].ood
        for key in keys:
            n = 2 * args.n_eval if key.endswith("noise") else pool(args.n_eval, args.quick)
            if key == "cifar10-gray":
                def load(n=n):
                    data = gray_cifar10(root, n)
                    return data._derive(jpeg_reencode(data.images, 75), data.labels,
                                        "JPEG re-encoded with Pillow at quality 75")
                ood[key] = OODSet(load, "far", "CIFAR-10 test, grayscale")
                continue
            name, split, kind, label = OOD_SETS[key]
            # noise: a pool of 2x n_eval; each seed draws from it
            ood[key] = OODSet(dataset_loader(name, split, root=root, n=n, download=args.download),
                              kind, label, "JPEG q75 re-encoded")
    peers = None if args.no_peers else peer_table(args.alpha, args.ee_max, args.lof_max,
                                                 args.n_fit)
    label = str(encoder.relative_to(REPO) if encoder.is_relative_to(REPO) else encoder)
    return evaluate(encoder, id_set("train", pool(args.n_fit, args.quick)),
                    id_set("test", n_test), ood, seeds=args.seeds, n_fit=args.n_fit,
                    n_eval=args.n_eval, alpha=args.alpha, n_calibrate=args.calibrate_held_out,
                    layer=args.layer, views=args.views, peers=peers,
                    name=setting, encoder_label=label)


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
            id_name, classes = SETTINGS[setting][:2]
            id_label = "CIFAR-10" if id_name == "cifar10" else "Fashion-MNIST"
            ax.hist(np.clip(sc["__id__"], lo, None), bins, alpha=0.6, density=True,
                    label=f"{id_label}{' classes 0-5' if classes else ''} (ID test)")
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
    encoders = {s: getattr(args, encoder_flag(s)[2:].replace("-", "_")) for s in SETTINGS}
    named = argv is not None and "--settings" in argv or "--settings" in sys.argv
    skipped = {}
    for setting in list(args.settings):
        if not encoders[setting].is_file():
            if named:
                raise SystemExit(f"cifar10_ood: {missing_encoder(encoders[setting], setting)}")
            skipped[setting] = missing_encoder(encoders[setting], setting)
            args.settings.remove(setting)
            log(f"skipping setting {setting}: {skipped[setting]}")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if not args.no_peers:
        try:
            import pytorch_ood  # noqa: F401
        except ImportError:
            raise ImportError("The peers need pytorch-ood: pip install 'gaussood[bench]' "
                              "(or pass --no-peers).") from None
    from gaussood.deep.data import data_root
    root = data_root(args.root)
    start = time.perf_counter()
    results = {s: run_setting(s, encoders[s], args, root) for s in args.settings}
    wall = time.perf_counter() - start
    md = [f"## OOD benchmark (CIFAR-10 and Fashion-MNIST settings){' (quick)' if args.quick else ''}", ""]
    md += [results[s].to_markdown() for s in args.settings]
    md += [f"Setting {s} not run: {why}" for s, why in skipped.items()]
    md.append(f"Command: `python benchmarks/cifar10_ood.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
              f"; wall time {wall / 60:.1f} min; {os.cpu_count()} CPUs.")
    if not args.no_figure:
        fig_path = args.results_dir / f"{args.name}_hist.png"
        with atomic_path(fig_path, suffix=".partial.png") as tmp:
            figure({s: r.scores for s, r in results.items()},
                   {s: r.data for s, r in results.items()}, tmp)
        md.append(f"\n![score histograms]({fig_path.name})")
    text = "\n".join(md) + "\n"
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "environment": environment(), "wall_seconds": wall,
              "settings": {s: results[s].to_dict() for s in args.settings},
              "skipped_settings": skipped}
    write_results(args.name, result, text, args.results_dir, indent=1)
    log(f"wrote {args.results_dir / args.name}.json, .md"
        f"{'' if args.no_figure else ' and _hist.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
