"""Train the contrastive encoder that the benchmarks use, and record how it went.

Trains ``gaussood.deep.train_encoder`` (SimCLR / InfoNCE) on the CIFAR-10 JPEG
train split (or Fashion-MNIST), monitors weighted k-NN top-1 accuracy (k = 200) on
the test split, then measures the full protocol (bank = every train image, queries =
every test image) on the final encoder, and writes
  benchmarks/checkpoints/<name>.pt     fp16 encoder file (loadable by load_encoder)
  benchmarks/checkpoints/<name>.json   provenance (gaussood.provenance.training_record, the
                                       schema of ``gaussood train``): command, config, data
                                       fingerprint, wall clock, CPU, commit, versions, seed,
                                       kNN accuracy, sha256
  benchmarks/results/<name>.json/.md   k-NN accuracy and loss against training time.
Every TrainConfig field is an option (``--budget-minutes``, ``--resolution``, ...).
The run checkpoints under --work-dir (every epoch and every --checkpoint-minutes) and
resumes there if cut short; for a run longer than one sitting, point --work-dir at
benchmarks/checkpoints/runs/<name> and commit its last.pt.

Run (CPU default, under 30 minutes on 2 cores):
    python benchmarks/train_encoder.py --root ../shared/data --threads 1
Budgeted CPU recipe (see benchmarks/results/cpu_recipe.md):
    python benchmarks/train_encoder.py --threads 1 --budget-minutes 240 --resolution 16:0.75,32
GPU (ResNet-18): python benchmarks/train_encoder.py --model resnet18 --epochs 30 --batch-size 512
Several processes (DistributedDataParallel; --batch-size stays the global batch, split
across them, and the run is the same recipe, see docs/distributed-training.md): add
--nproc N (spawns N local ranks, one per GPU on CUDA), or launch with torchrun (one
process per GPU; only rank 0 writes the outputs):
    torchrun --standalone --nproc-per-node 4 benchmarks/train_encoder.py --model resnet18 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results  # noqa: E402

from gaussood._atomic import atomic_path  # noqa: E402
from gaussood.cli.options import add_train_config_flags, positive_int, train_config  # noqa: E402
from gaussood.deep import (embed_images, knn_top1, load_dataset, save_encoder,  # noqa: E402
                           train_encoder)
from gaussood.deep.data import parse_classes  # noqa: E402
from gaussood.deep.embed import pick_device  # noqa: E402
from gaussood.deep.models import model_flops  # noqa: E402
from gaussood.provenance import data_fingerprint, training_record  # noqa: E402

HERE = Path(__file__).resolve().parent


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def full_protocol(model, train, test, config, device) -> dict:
    """Weighted k-NN top-1 with every train image in the bank and every test image queried."""
    start = time.perf_counter()
    bank, queries = (embed_images(model, s.images, device=device) for s in (train, test))
    acc = knn_top1(bank, train.labels, queries, test.labels, config.knn_k, config.knn_temperature)
    return {"knn_top1": acc, "bank": len(train), "queries": len(test),
            "seconds": time.perf_counter() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root with the CIFAR-10 archive")
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "fashion-mnist"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster when "
                             "another process keeps a core busy)")
    parser.add_argument("--classes", default=None,
                        help="train (and monitor) on these class ids only, e.g. 0-5")
    parser.add_argument("--name", default=None, help="output name (default: <dataset>-<model>)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="leave the run after about this many minutes in this call, with a "
                             "checkpoint (SIGTERM does the same); resume later from --work-dir")
    parser.add_argument("--snapshots", action="store_true",
                        help="also keep an fp16 encoder file per epoch in --work-dir")
    parser.add_argument("--checkpoint-dir", type=Path, default=HERE / "checkpoints")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    add_train_config_flags(parser)
    parser.add_argument("--nproc", type=positive_int, default=1,
                        help="processes (DistributedDataParallel ranks, one per GPU on CUDA); "
                             "--batch-size is the global batch, split across them; under "
                             "torchrun the world size")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    classes = parse_classes(args.classes)
    config = train_config(args)
    name = args.name or f"{args.dataset}-{config.model}"
    device = pick_device(args.device)
    work = args.work_dir or Path.home() / ".cache" / "gaussood" / "runs" / name
    start = time.perf_counter()
    train = load_dataset(args.dataset, "train", root=args.root, classes=classes)
    test = load_dataset(args.dataset, "test", root=args.root, classes=classes)
    load_s = time.perf_counter() - start
    deadline = (None if args.stop_after_minutes is None
                else time.monotonic() + 60 * args.stop_after_minutes)
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    result = train_encoder(train, config, eval_set=test, checkpoint_dir=work, device=device,
                           snapshots=args.snapshots, nproc=args.nproc,
                           should_stop=lambda: bool(terminated) or (
                               deadline is not None and time.monotonic() > deadline))
    if result.rank != 0:
        return  # torchrun: rank 0 writes the outputs
    wall = time.perf_counter() - start
    final = result.history[-1] if result.history else {"step": 0}
    done = torch.load(work / "last.pt", weights_only=True)["step"]
    if done < result.total_steps:
        print(f"stopped at step {done} of {result.total_steps}; resume with the same "
              f"command (checkpoint {work / 'last.pt'})")
        return

    full = full_protocol(result.model, train, test, config, device)
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    encoder_path = args.checkpoint_dir / f"{name}.pt"
    save_encoder(result.model, encoder_path, half=True)
    train_s = final["elapsed"]
    protocol = (f"weighted k-NN (k={config.knn_k}, T={config.knn_temperature}) on backbone "
                "features")
    provenance = training_record(
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
        config=dataclasses.asdict(config), encoder_file=encoder_path,
        encoder_name=encoder_path.name, total_steps=result.total_steps,
        epochs=len(result.history), device=str(device),
        data={"train": train.source, "eval": test.source, "n_train": len(train),
              "classes": classes, "dataset": args.dataset,
              "fingerprint": data_fingerprint(train)},
        knn_top1=full["knn_top1"], train_seconds=train_s, environment=environment(),
        world_size=result.world_size,
        views=final["views"], backbone_mflop_32px=model_flops(config.model) / 1e6,
        commit=git_commit(),
        knn_protocol=f"{protocol}: bank = all {len(train)} train images, queries = all "
                     f"{len(test)} test images",
        knn_top1_monitor=final["knn_top1"],
        knn_monitor_protocol=f"{protocol}: bank {min(config.knn_bank, len(train))} train "
                             f"images, {min(config.knn_queries, len(test))} test images",
        wall_seconds_last_call=wall, data_load_seconds=load_s)
    with atomic_path(args.checkpoint_dir / f"{name}.json") as tmp:
        Path(tmp).write_text(json_dumps(provenance))

    rows = []
    for h in result.history:
        knn = "-" if h["knn_top1"] is None else f"{100 * h['knn_top1']:.2f}"
        proxy = h.get("proxy_auroc")  # absent in histories of older runs
        proxy = "-" if not proxy else " / ".join(f"{100 * v:.1f}" for v in proxy.values())
        rows.append(f"| {h['epoch']} | {h['views'] / 1e6:.2f} | {h['resolution']} | "
                    f"{h['elapsed'] / 60:.1f} | {h['loss']:.4f} | {knn} | {proxy} | "
                    f"{h['views_per_s']:,.0f} |")
    proxy_names = next((" / ".join(h["proxy_auroc"]) for h in result.history
                        if h.get("proxy_auroc")), "off")
    objective = {"supervised": "Supervised (cross-entropy)",
                 "supcon": "Supervised contrastive (SupCon)"}.get(config.objective, "Contrastive")
    table = "\n".join([
        f"{objective} training of `{config.model}` on {train.source}; device {device}; "
        f"batch {config.batch_size}, seed {config.seed}, resolution schedule "
        f"`{config.resolution}`, temperature {config.temperature}, {result.total_steps} steps"
        + (f" (sized to a {config.budget_minutes:g}-minute budget by a timed warm-up; "
           f"`--steps {result.total_steps}` reruns the same steps anywhere)"
           if config.budget_minutes else "") + ".",
        "", f"Final weighted k-NN top-1 (k={config.knn_k}, T={config.knn_temperature}): "
        f"**{100 * full['knn_top1']:.2f}%** with the full protocol (bank = all {len(train)} "
        f"train images, queries = all {len(test)} test images); "
        f"{100 * final['knn_top1']:.2f}% on the monitor protocol of the table below.",
        "", f"| epoch | views (M) | crop px | training minutes (cumulative) | "
        f"{ {'supervised': 'cross-entropy', 'supcon': 'SupCon'}.get(config.objective, 'InfoNCE')} loss | "
        f"k-NN top-1 (%), {provenance['knn_monitor_protocol']} | OOD-proxy AUROC (%), "
        f"{proxy_names}: held-out ID vs proxies made from ID images, Gaussian on L2 "
        f"backbone features (gaussood.deep.monitor) | views/s |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Encoder: `{encoder_path.relative_to(HERE.parent) if encoder_path.is_relative_to(HERE.parent) else encoder_path}` (fp16, "
        f"{provenance['size_bytes'] / 2**20:.1f} MiB, sha256 {provenance['sha256'][:16]}...); "
        f"commit {provenance['commit'] or 'unknown'}."])
    write_results(name, {"provenance": provenance, "history": result.history,
                         "full_protocol": full}, table, args.results_dir)


def json_dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=2, default=lambda o: o.item() if isinstance(o, np.generic)
                      else str(o)) + "\n"


if __name__ == "__main__":
    main()
