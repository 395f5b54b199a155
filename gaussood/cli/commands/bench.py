"""``gaussood bench``: every scorer on an encoder's embeddings of an ID set and OOD sets,
over several seeds (gaussood.deep.evaluate)."""

from __future__ import annotations

import sys
from pathlib import Path

from ...bench_settings import OOD_SETS, QUICK, near_sets, pool, quick, held_out_pool

from .._common import (existing_file, load_dataset, need_torch,
                       refuse_overwriting_by_reports, write_text)
from ..options import (add_calibration_flag, add_data_flags, add_quiet_flag, classes_arg,
                       param_types, positive_int)

HELP = "evaluate every scorer on an encoder's embeddings (torch)"
DESCRIPTION = ("Embed an ID dataset and OOD sets with an encoder file, fit gaussood's scorers "
               "over several seeds and print AUROC, AUPR, FPR@95TPR and false alarms "
               "(gaussood.deep.evaluate). Never trains: give an encoder file ('gaussood "
               "train' or 'make train' writes one). The full CIFAR-10 benchmark with its "
               "peers is benchmarks/cifar10_ood.py.")
NEEDS_TORCH = True  # dataset names live on the torch side


def add_arguments(p) -> None:
    p.add_argument("--encoder", type=Path, required=True, metavar="PATH.pt",
                   help="encoder file")
    add_data_flags(p, default_dataset="cifar10", n_help=None)
    p.add_argument("--ood", nargs="+", metavar="NAME[:CLASSES]",
                   default=list(OOD_SETS),
                   help="OOD test sets (missing files are reported and skipped); "
                        "NAME:CLASSES takes some classes, e.g. cifar10:6-9")
    p.add_argument("--near", nargs="*", default=near_sets(),
                   help="OOD sets reported as near (also the ID dataset's own classes)")
    p.add_argument("--jpeg-quality", type=int, default=75,
                   help="JPEG re-encoding of every image (0: none)")
    p.add_argument("--layer", choices=["backbone", "head"], default="backbone",
                   help="backbone features h or projection-head output z")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-fit", type=int, default=40_000, help="ID train images per seed")
    p.add_argument("--n-eval", type=int, default=5_000,
                   help="held-out ID test images and images per OOD set, per seed")
    p.add_argument("--alpha", type=param_types()["alpha"], default=0.05,
                   help="target false-alarm rate of every scorer")
    add_calibration_flag(p)
    p.add_argument("--quick", action="store_true",
                   help=f"one seed, at most {QUICK['n_fit']:,} fit / {QUICK['n_eval']:,} "
                        "eval images")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                   help="also write NAME.md and NAME.json here")
    p.add_argument("--name", default="bench", help="file name for --out-dir")
    add_quiet_flag(p)


def run(args) -> int:
    parser = args.parser
    if args.n_fit < 100 or args.n_eval < 100:
        parser.error("--n-fit and --n-eval must be at least 100")
    classes = classes_arg(args.classes, parser)
    torch = need_torch("bench")
    from ...deep.data import parse_classes
    from ...deep.evaluate import OODSet, dataset_loader, evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    existing_file(args.encoder, "encoder file")
    refuse_overwriting_by_reports(args, (f"{args.name}.md", f"{args.name}.json"),
                                  [("--encoder", args.encoder)])
    seeds, n_fit, n_eval = args.seeds, args.n_fit, args.n_eval
    if args.quick:
        seeds, sizes = quick(seeds, n_fit=n_fit, n_eval=n_eval)
        n_fit, n_eval = sizes["n_fit"], sizes["n_eval"]
    quality = None if args.jpeg_quality == 0 else args.jpeg_quality
    ood = {}
    for spec in args.ood:
        name, _, subset = spec.partition(":")
        try:
            ood_classes = parse_classes(subset) if subset else None
        except ValueError as exc:
            parser.error(f"argument --ood: {spec}: {exc}")
        kind = "near" if name in args.near or name == args.dataset else "far"
        ood[spec] = OODSet(dataset_loader(name, "test", root=args.data_root, classes=ood_classes,
                                          n=2 * n_eval, download=args.download,
                                          jpeg_quality=quality), kind, spec)

    def id_set(split, n):
        return load_dataset(args.dataset, split, root=args.data_root, download=args.download,
                            classes=classes, n=n, jpeg_quality=quality)

    result = evaluate(args.encoder, id_set("train", pool(n_fit, args.quick)),
                      id_set("test", held_out_pool(n_eval, args.calibrate_held_out, args.quick)),
                      ood, seeds=seeds, n_fit=n_fit, n_eval=n_eval, alpha=args.alpha,
                      n_calibrate=args.calibrate_held_out, layer=args.layer,
                      name=args.dataset, progress=not args.quiet)
    text = result.to_markdown()
    print(text)
    if args.out_dir is not None:
        write_text(args.out_dir / f"{args.name}.md", text)
        write_text(args.out_dir / f"{args.name}.json", result.to_json() + "\n")
        print(f"wrote {args.out_dir / args.name}.md and .json", file=sys.stderr)
    return 0
