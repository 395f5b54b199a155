"""``gaussood embed``: embeddings of a dataset, an image folder or an image array, with
the encoder's identity (and the labels or file paths) beside them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from .._common import (PROG, json_default, labels_path, load_dataset, need_torch,
                       refuse_overwriting_inputs)
from .._encoder import (add_encoder_flags, encoder_file, image_encoder, image_input,
                        layer_names, write_paths_csv)
from .._identity import identity_path, identity_record, layer_identity, paths_path
from ..options import add_data_flags, classes_arg

HELP = "embed images with an encoder (torch)"
DESCRIPTION = ("Embed a dataset (cached), a folder of image files or a uint8 .npy image array "
               "with an encoder; write float32 embeddings, the encoder's identity "
               "(FILE.encoder.json), and the labels or file paths.")
NEEDS_TORCH = True  # dataset names live on the torch side


def add_arguments(p) -> None:
    add_encoder_flags(p, required=True)
    add_data_flags(p, default_dataset=None, n_help="a seeded subset of n images")
    p.add_argument("--images", type=Path, default=None, metavar="DIR_OR_NPY",
                   help="a folder of image files (recursive, sorted; any size and mode) "
                        "or a uint8 .npy of shape (N, H, W, 3), instead of --dataset")
    p.add_argument("--split", choices=["train", "test"], default=None, help="default: test")
    p.add_argument("--jpeg-quality", type=int, default=None,
                   help="re-encode the images as JPEG at this quality (1-100)")
    p.add_argument("--seed", type=int, default=0, help="seed of --n and of the noise sets")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.npy",
                   help="float32 embeddings; FILE.encoder.json gets the encoder identity, "
                        "FILE.labels.npy the labels (datasets with labels), "
                        "FILE.paths.csv the image files in row order (folders); with "
                        "several --layer, FILE.LAYER.npy and FILE.LAYER.encoder.json per "
                        "layer (characters other than letters, digits, . _ - in LAYER "
                        "become -)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="embedding cache of --dataset (default: $GAUSSOOD_CACHE or "
                        "~/.cache/gaussood/cache)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the cache (several --layer never use it)")


def run(args) -> int:
    parser = args.parser
    if (args.dataset is None) == (args.images is None):
        parser.error("give exactly one of --dataset NAME and --images DIR_OR_NPY")
    out = args.out
    if out.suffix != ".npy":
        parser.error(f"--out must end in .npy; got {out}")
    if args.images is not None:
        dataset_only = [flag for flag, value in (("--split", args.split), ("--n", args.n),
                                                 ("--classes", args.classes),
                                                 ("--jpeg-quality", args.jpeg_quality))
                        if value is not None]
        if dataset_only:
            parser.error(f"{', '.join(dataset_only)} apply to --dataset only")
    if args.strict and not (args.images is not None and args.images.is_dir()):
        parser.error("--strict applies to --images FOLDER only")
    enc_file = encoder_file(args)
    layers = args.layer or [None]
    twice = [layer for layer in layers if layers.count(layer) > 1]
    if twice:
        parser.error(f"--layer {twice[0]} is given twice")
    outs = [out] if len(layers) == 1 else [layer_out(out, layer) for layer in layers]
    labels_out, paths_out = labels_path(out), paths_path(out)
    named = [("--out" if len(outs) == 1 else f"--layer {layer}'s embeddings", path)
             for layer, path in zip(layers, outs)]
    named += [("the labels file", labels_out), ("the paths file", paths_out)] + [
        ("the encoder identity file" + ("" if len(outs) == 1 else f" of {path.name}"),
         identity_path(path)) for path in outs]
    clash = [p for p in {p for _, p in named} if sum(q == p for _, q in named) > 1]
    if clash:
        parser.error(f"two outputs would be written to {clash[0]} (layers {', '.join(layers)}"
                     f" with --out {out}): choose other --out or layer names")
    refuse_overwriting_inputs(
        parser, named,
        [("--images", args.images), ("--encoder", enc_file), ("--weights", args.weights)])
    classes = classes_arg(args.classes, parser)
    images = None if args.images is None else image_input(args.images, args.strict, parser)
    folder = isinstance(images, Path)
    need_torch("embed")
    from ..._atomic import atomic_paths
    from ...deep import extract_embeddings

    encoder = image_encoder(args, enc_file)
    several = len(encoder.layers) > 1
    labels, feats = None, None
    if images is None:
        dataset = load_dataset(args.dataset, args.split or "test", root=args.data_root,
                               download=args.download, jpeg_quality=args.jpeg_quality,
                               classes=classes, n=args.n, seed=args.seed)
        if several:   # the cache holds one layer: embed all of them in one pass instead
            images = dataset
        else:
            cache = False if args.no_cache else args.cache_dir
            feats = extract_embeddings(encoder, dataset, cache_dir=cache,
                                       batch_size=args.batch_size, progress=not args.quiet)
            feats = [np.ascontiguousarray(feats, dtype=np.float32)]
        if len(dataset) and int(dataset.labels.min()) >= 0:
            labels = dataset.labels
        what = dataset.source
    else:
        what = (f"images from folder {args.images}" if folder
                else f"{len(images)} images from {args.images}")
    targets = outs + ([labels_out] if labels is not None else []) \
        + ([paths_out] if folder else []) + [identity_path(o) for o in outs]
    suffixes = [".partial.npy"] * len(outs) + [".partial" + p.suffix for p in targets[len(outs):]]
    skipped = []
    # everything is written to temporary names first and renamed together, the
    # embeddings first: never a companion without (or older than) its embeddings
    with atomic_paths(targets, suffixes) as temps:
        tmp = dict(zip(targets, temps))
        if feats is None:   # images (or a dataset, for several layers): rows go to the files
            emb = encoder.embed(images, out=dict(zip(encoder.layers, (tmp[o] for o in outs)))
                                if several else tmp[out], progress=not args.quiet,
                                strict=args.strict, desc=f"embed ({layer_names(encoder)})",
                                return_sources=True)
            feats = list(emb.X.values()) if several else [emb.X]
        else:
            with open(tmp[out], "wb") as fh:
                np.save(fh, feats[0])
        shapes = [tuple(int(s) for s in f.shape) for f in feats]
        del feats   # memmaps of the temporary files
        if folder:
            skipped = list(emb.skipped)
            if not emb.files:
                raise ValueError(f"none of the {len(skipped)} image files under {args.images} "
                                 f"could be read (first: {skipped[0][1] if skipped else '?'})")
            write_paths_csv(tmp[paths_out], emb.files)
            what = f"{len(emb.files)} images from folder {args.images}"
        if labels is not None:
            with open(tmp[labels_out], "wb") as fh:
                np.save(fh, np.asarray(labels, dtype=np.int64))
        identity = encoder.identity()   # after the pass: lazy modules have weights now
        identities = [identity] if not several else [
            layer_identity(identity, layer) for layer in encoder.layers]
        for o, shape, identity in zip(outs, shapes, identities):
            record = identity_record(o, tmp[o], shape, identity, what)
            with open(tmp[identity_path(o)], "w", encoding="utf-8") as fh:
                fh.write(json.dumps(record, indent=2, sort_keys=True,
                                    default=json_default) + "\n")
    for stale in ([] if labels is not None else [labels_out]) + ([] if folder else [paths_out]):
        if stale.exists():  # from an earlier run: it no longer matches
            stale.unlink()
            print(f"{PROG} embed: removed stale {stale}", file=sys.stderr)
    n_ids = len(outs)
    wrote = ", ".join(str(p) for p in targets[:-n_ids]) + " and " + (
        str(targets[-1]) if n_ids == 1 else "their encoder identity files")
    skip = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
    dims = " + ".join(str(shape[1]) for shape in shapes)
    print(f"embedded {what}{skip}: {shapes[0][0]} x {dims if n_ids == 1 else f'({dims})'} "
          f"float32 ({layer_names(encoder)}); wrote {wrote}")
    return 0


def layer_out(out: Path, layer: str) -> Path:
    """``X.npy`` -> ``X.LAYER.npy``: the embeddings of one of several layers (characters
    other than letters, digits, ``.``, ``_`` and ``-`` in the name become ``-``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", layer)
    return out.with_name(f"{out.name[:-len('.npy')]}.{safe}.npy")
