"""``gaussood train``: train an encoder, write it with a .json provenance file beside it."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

from .._common import json_default, load_dataset, need_torch, refuse_overwriting_inputs
from ..options import (add_data_flags, add_device_flag, add_quiet_flag,
                       add_train_config_flags, classes_arg, positive_int, train_config)

HELP = "train a contrastive encoder (torch)"
DESCRIPTION = ("Train an encoder with InfoNCE (SimCLR) or cross-entropy; write an fp16 "
               "encoder file and a .json provenance file beside it.")
NEEDS_TORCH = True  # dataset names and TrainConfig fields live on the torch side


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="PATH.pt",
                   help="encoder file to write; PATH.json (config, history, data, sha256) "
                        "goes beside it")
    add_data_flags(p, default_dataset="cifar10",
                   n_help="train on n images (a seeded random subset; noise sets: their size)")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="train on the image files under DIR (recursive, any size: shorter "
                        "side to the largest --resolution side, centre crop) instead of "
                        "--dataset; unlabelled, so no k-NN monitor")
    add_train_config_flags(p)
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="processes (DistributedDataParallel ranks, one per GPU on CUDA); "
                        "--batch-size is the global batch, split across them; under "
                        "torchrun the world size")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    add_device_flag(p)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoint after each epoch here and resume from it")
    p.add_argument("--snapshots", action="store_true",
                   help="also keep an fp16 encoder per epoch in --work-dir")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the per-epoch k-NN monitor on the test split")
    add_quiet_flag(p)


def run(args) -> int:
    parser = args.parser
    if args.out.suffix == ".json":
        parser.error("--out names the encoder file (.pt); the .json provenance goes beside it")
    if args.snapshots and args.work_dir is None:
        parser.error("--snapshots needs --work-dir")
    json_path = args.out.with_suffix(".json")
    if args.work_dir is not None:
        inputs = [("the resume checkpoint of --work-dir", args.work_dir / "last.pt")]
        if args.snapshots and re.fullmatch(r"epoch\d+\.pt", args.out.name):
            inputs.append(("a snapshot of --work-dir", args.work_dir / args.out.name))
        refuse_overwriting_inputs(parser, [("--out", args.out),
                                           ("the provenance file", json_path)], inputs)
    classes = classes_arg(args.classes, parser)
    torch = need_torch("train")
    import dataclasses

    from ..._atomic import atomic_paths
    from ..._env import environment
    from ...deep import save_encoder, train_encoder
    from ...deep.embed import pick_device
    from ...deep.train import as_image_set
    from ...provenance import data_fingerprint, training_record

    if args.threads:
        torch.set_num_threads(args.threads)
    config = train_config(args)
    device = pick_device(args.device)
    start = time.perf_counter()
    if args.images is not None:  # unlabelled: no k-NN monitor, the OOD-proxy one runs
        if not args.images.is_dir():
            parser.error(f"--images {args.images}: no such folder")
        train = as_image_set(args.images, config)
    else:
        train = load_dataset(args.dataset, "train", root=args.data_root,
                             download=args.download, classes=classes, n=args.n,
                             seed=config.seed)
    labelled = len(train) > 0 and int(train.labels.min()) >= 0
    test = None
    if labelled and not args.no_eval and args.images is None:
        test = load_dataset(args.dataset, "test", root=args.data_root, download=args.download,
                            classes=classes)
    load_s = time.perf_counter() - start
    result = train_encoder(train, config, eval_set=test, checkpoint_dir=args.work_dir,
                           device=device, progress=not args.quiet, snapshots=args.snapshots,
                           nproc=args.nproc)
    if result.rank != 0:
        return 0  # under torchrun only rank 0 writes --out and the provenance
    if not result.history:
        raise ValueError("no epoch was trained (--epochs 0?)")
    wall = time.perf_counter() - start

    out = args.out
    final = result.history[-1]
    # the encoder is renamed into place first; its .json only after it
    with atomic_paths([out, json_path], [".partial.pt", ".partial"]) as (tmp_pt, tmp_json):
        save_encoder(result.model, tmp_pt, half=True)
        provenance = training_record(
            command="gaussood " + shlex.join(args.argv), config=dataclasses.asdict(config),
            encoder_file=tmp_pt, encoder_name=out.name, total_steps=result.total_steps,
            epochs=len(result.history), device=str(device),
            data={"train": train.source, "eval": None if test is None else test.source,
                  "n_train": len(train), "classes": classes,
                  "dataset": None if args.images is not None else args.dataset,
                  "fingerprint": data_fingerprint(train)},
            knn_top1=final.get("knn_top1"),
            train_seconds=sum(h["seconds"] for h in result.history),
            environment=environment(), world_size=result.world_size,
            history=result.history, wall_seconds_this_call=wall, data_load_seconds=load_s,
            work_dir=None if args.work_dir is None else str(args.work_dir))
        size = provenance["size_bytes"]
        with open(tmp_json, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(provenance, indent=2, default=json_default) + "\n")
    knn = "" if final.get("knn_top1") is None else f", kNN top-1 {100 * final['knn_top1']:.1f}%"
    print(f"trained {config.model} ({config.objective}) for {len(result.history)} epoch(s) on "
          f"{len(train)} images, final loss {final['loss']:.4f}{knn}; wrote {out} "
          f"(fp16, {size / 2**20:.1f} MiB) and {json_path}")
    return 0
