"""Train the contrastive encoder that the benchmarks use, and record how it went.

Trains ``gaussood.deep.train_encoder`` (SimCLR / InfoNCE) on the CIFAR-10 JPEG
train split, monitors weighted k-NN top-1 accuracy (k = 200) on the test split
after every epoch, and writes
  benchmarks/checkpoints/<name>.pt     fp16 encoder file (loadable by load_encoder)
  benchmarks/checkpoints/<name>.json   provenance: command, config, epochs, wall
                                       time, device, versions, seed, kNN accuracy, sha256
  benchmarks/results/<name>.json/.md   k-NN accuracy and loss against wall time.
The run checkpoints every epoch under --work-dir and resumes there if cut short.

Run (CPU default, under 30 minutes on 2 cores):
    python benchmarks/train_encoder.py --root ../shared/data --threads 1
GPU (ResNet-18): python benchmarks/train_encoder.py --model resnet18 --epochs 30 --batch-size 512
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results  # noqa: E402

from gaussood.deep import TrainConfig, load_dataset, save_encoder, train_encoder  # noqa: E402
from gaussood.deep.checkpoint import file_sha256  # noqa: E402
from gaussood.deep.embed import pick_device  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_classes(text):
    """'0-5' or '0,1,2' -> list of ints (None stays None)."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv=None):
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root with the CIFAR-10 archive")
    parser.add_argument("--model", default=defaults.model, choices=["small", "resnet18"])
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cap (smoke runs)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster when "
                             "another process keeps a core busy)")
    parser.add_argument("--objective", default=defaults.objective,
                        choices=["infonce", "supervised"],
                        help="supervised: cross-entropy baseline, same architecture and budget")
    parser.add_argument("--classes", default=None,
                        help="train (and monitor) on these CIFAR-10 class ids only, e.g. 0-5")
    parser.add_argument("--snapshots", action="store_true",
                        help="also keep an fp16 encoder file per epoch in --work-dir")
    parser.add_argument("--name", default=None, help="output name (default: cifar10-<model>)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--checkpoint-dir", type=Path, default=HERE / "checkpoints")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    classes = parse_classes(args.classes)
    name = args.name or f"cifar10-{args.model}"
    config = dataclasses.replace(defaults, model=args.model, epochs=args.epochs,
                                 objective=args.objective,
                                 batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 steps_per_epoch=args.steps_per_epoch, compile=args.compile)
    device = pick_device(args.device)
    work = args.work_dir or Path.home() / ".cache" / "gaussood" / "runs" / name
    start = time.perf_counter()
    train = load_dataset("cifar10", "train", root=args.root, classes=classes)
    test = load_dataset("cifar10", "test", root=args.root, classes=classes)
    load_s = time.perf_counter() - start
    result = train_encoder(train, config, eval_set=test, checkpoint_dir=work, device=device,
                           snapshots=args.snapshots)
    wall = time.perf_counter() - start

    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    encoder_path = args.checkpoint_dir / f"{name}.pt"
    save_encoder(result.model, encoder_path, half=True)
    train_s = sum(h["seconds"] for h in result.history)
    final = result.history[-1]
    provenance = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "config": dataclasses.asdict(config), "epochs": len(result.history),
        "device": str(device), "environment": environment(),
        "data": {"train": train.source, "test": test.source, "n_train": len(train),
                 "classes": classes},
        "knn_top1": final["knn_top1"], "knn_protocol": (
            f"weighted k-NN (k={config.knn_k}, T={config.knn_temperature}) on backbone "
            f"features: bank {config.knn_bank} train images, {config.knn_queries} test images"),
        "train_seconds": train_s, "wall_seconds_this_call": wall, "data_load_seconds": load_s,
        "encoder_file": encoder_path.name, "sha256": file_sha256(encoder_path),
        "size_bytes": encoder_path.stat().st_size, "weights": "float16",
    }
    (args.checkpoint_dir / f"{name}.json").write_text(json.dumps(provenance, indent=2) + "\n")

    elapsed, rows = 0.0, []
    for h in result.history:
        elapsed += h["seconds"]
        knn = "-" if h["knn_top1"] is None else f"{100 * h['knn_top1']:.2f}"
        rows.append(f"| {h['epoch']} | {elapsed / 60:.1f} | {h['loss']:.4f} | {knn} | "
                    f"{h['views_per_s']:,.0f} |")
    table = "\n".join([
        f"{'Supervised (cross-entropy)' if config.objective == 'supervised' else 'Contrastive'} "
        f"training of `{config.model}` on {train.source}; device {device}; "
        f"batch {config.batch_size}, seed {config.seed}. k-NN top-1: {provenance['knn_protocol']}.",
        "", f"| epoch | training minutes (cumulative) | "
        f"{'cross-entropy' if config.objective == 'supervised' else 'InfoNCE'} loss | "
        "k-NN top-1 (%) | views/s |",
        "|---|---|---|---|---|", *rows, "",
        f"Encoder: `benchmarks/checkpoints/{encoder_path.name}` (fp16, "
        f"{provenance['size_bytes'] / 2**20:.1f} MiB, sha256 {provenance['sha256'][:16]}...)."])
    write_results(name, {"provenance": provenance, "history": result.history}, table,
                  args.results_dir)


if __name__ == "__main__":
    main()
