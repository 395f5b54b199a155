"""``gaussood score``: scores, p-values and flags of embeddings (or of images, embedded on
the way with the scorer's encoder) under a saved scorer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ...provenance import check_identity, stored_identity
from .._common import load_embeddings, need_torch, refuse_overwriting_inputs
from .._encoder import (add_encoder_flags, encoder_file, image_encoder, image_input,
                        layer_names)
from .._identity import (check_embeddings, check_layer_embeddings, check_scorer_file,
                         stored_layer_identities)
from ..options import add_scorer_file_flags

HELP = "score embeddings or images with a saved scorer"
DESCRIPTION = ("Score embeddings, or images embedded on the way with the encoder the scorer "
               "was fitted on (torch), with a saved scorer: score (higher = more "
               "in-distribution), p-value, and the flag at the scorer's threshold. A scorer "
               "fitted on several layers takes one --embeddings per layer, or --layer for "
               "each, in the order it was fitted on.")
NEEDS_TORCH = False  # only --images imports it, when the command runs


def add_arguments(p) -> None:
    add_scorer_file_flags(p, embeddings_required=False, embeddings_metavar="X.npy",
                          embeddings_help="2-D array with the scorer's number of features; "
                                          "repeat for a scorer fitted on several "
                                          "--embeddings, in the same order",
                          repeat=True)
    p.add_argument("--images", type=Path, default=None, metavar="DIR_OR_NPY",
                   help="instead of --embeddings: a folder of image files or a uint8 .npy "
                        "(N, H, W, 3), embedded with --encoder")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv|FILE.npz",
                   help=".csv (index,score,pvalue,flagged; path,score,pvalue,flagged for a "
                        "folder) or .npz (score, pvalue, flagged, and path for a folder)")
    add_encoder_flags(p, required=False)


def run(args) -> int:
    parser, out = args.parser, args.out
    if out.suffix not in (".csv", ".npz"):
        parser.error(f"--out must end in .csv or .npz; got {out}")
    if (args.embeddings is None) == (args.images is None):
        parser.error("give exactly one of --embeddings X.npy and --images DIR_OR_NPY")
    enc_file = None
    if args.images is None:
        image_only = [flag for flag, value in (
            ("--encoder", args.encoder), ("--layer", args.layer), ("--weights", args.weights),
            ("--preprocessing", args.preprocessing), ("--strict", args.strict or None))
            if value is not None]
        if image_only:
            parser.error(f"{', '.join(image_only)} apply to --images only")
    else:
        if args.encoder is None:
            parser.error("--images needs --encoder SPEC (the encoder the scorer was fitted on)")
        enc_file = encoder_file(args)
    refuse_overwriting_inputs(parser, [("--out", out)],
                              [("--scorer", args.scorer), ("--images", args.images),
                               ("--encoder", enc_file), ("--weights", args.weights)]
                              + [("--embeddings", f) for f in args.embeddings or ()])
    check_scorer_file(args.scorer)
    import gaussood

    paths, skipped = None, []
    if args.images is None:
        Xs = [load_embeddings(f) for f in args.embeddings]
        scorer = gaussood.load(args.scorer)
        blocks = layer_blocks(scorer)
        if blocks is not None and (len(Xs) > 1 or Xs[0].shape[1] != scorer.n_features_in_):
            for path, part in zip(args.embeddings[1:], Xs[1:]):
                if part.shape[0] != Xs[0].shape[0]:
                    raise ValueError(f"embeddings in {path} have {part.shape[0]} rows but "
                                     f"those in {args.embeddings[0]} have {Xs[0].shape[0]}")
            check_layer_embeddings(scorer, args.scorer, Xs, args.embeddings, blocks)
            X = np.hstack(Xs)
        elif len(Xs) > 1:
            raise ValueError(f"the scorer in {args.scorer} was fitted on one embeddings file; "
                             f"got {len(Xs)} --embeddings")
        else:
            X = Xs[0]
            check_embeddings(scorer, args.scorer, X, args.embeddings[0], warn_unchecked=True)
        what = "rows"
    else:
        scorer = gaussood.load(args.scorer)
        blocks = layer_blocks(scorer)
        images = image_input(args.images, args.strict, parser)
        need_torch("score --images")
        encoder = image_encoder(args, enc_file)
        stored = stored_identity(scorer)
        _check_layers(scorer, stored, blocks, encoder, args)
        if stored is None:
            warnings.warn(f"the scorer in {args.scorer} stores no encoder identity (fitted on "
                          "embeddings without their .encoder.json): cannot check that "
                          f"{args.encoder} is the encoder it was fitted on", UserWarning,
                          stacklevel=1)
        else:
            check_identity(stored, encoder.identity(), args.scorer,
                           f"--encoder {args.encoder} (layer {layer_names(encoder)})")
        emb = encoder.embed(images, progress=not args.quiet, strict=args.strict,
                            desc=f"embed ({layer_names(encoder)})", return_sources=True)
        X = emb.X
        if isinstance(X, dict):   # several layers, side by side in the scorer's order
            widths = [part.shape[1] for part in X.values()]
            X = np.hstack(list(X.values()))
            if blocks is not None and widths != [b - a for a, b in blocks]:
                raise ValueError(f"{args.encoder} gives {' + '.join(map(str, widths))} "
                                 f"features ({layer_names(encoder)}) but the scorer in "
                                 f"{args.scorer} was fitted on "
                                 f"{' + '.join(str(b - a) for a, b in blocks)}")
        if isinstance(images, Path):
            paths, skipped = list(emb.files), list(emb.skipped)
            if not paths:
                raise ValueError(f"none of the {len(skipped)} image files under {args.images} "
                                 "could be read")
        if X.shape[1] != scorer.n_features_in_:
            raise ValueError(f"{args.encoder} gives {X.shape[1]} features "
                             f"({layer_names(encoder)}) but the scorer in {args.scorer} was "
                             f"fitted on {scorer.n_features_in_}")
        what = "images"
    result = scorer.score_pvalue_decision(X)  # one pass, fold models included under cv+
    score, pvalue, flagged = result.score, result.pvalue, result.flagged  # flagged: predict == -1
    _write_scores(out, score, pvalue, flagged, paths)
    n, k = X.shape[0], int(flagged.sum())
    if scorer.threshold_rule_ == "alpha":
        rule = f"alpha {scorer.alpha_:g}"
    else:
        rule = f"the contamination {scorer.contamination:g} threshold"
    skip = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
    print(f"{n} {what}{skip}, {k} flagged ({100.0 * k / max(n, 1):.2f}%) at {rule}; "
          f"wrote {out}")
    return 0


def layer_blocks(scorer):
    """The column blocks [(start, stop), ...] of a scorer fitted on several layers or
    embeddings files (a ``PValueCombination`` with ``columns``), else None."""
    from ...combine import PValueCombination

    if isinstance(scorer, PValueCombination) and scorer.columns is not None:
        return [(int(a), int(b)) for a, b in scorer.columns]
    return None


def _check_layers(scorer, stored, blocks, encoder, args) -> None:
    """Refuse --layer options that are not the layers the scorer was fitted on, in its
    order (a one-line error saying which to give)."""
    fitted = None if stored is None else stored.get("layer")
    given = list(encoder.layers)
    if stored is None and blocks is not None and any(
            stored_layer_identities(scorer, len(blocks))):
        raise ValueError(f"the scorer in {args.scorer} was fitted on embeddings files that "
                         "are not all layers of one encoder: score it with one --embeddings "
                         "per file it was fitted on")
    if isinstance(fitted, list) and fitted != given:
        flags = " ".join(f"--layer {layer}" for layer in fitted)
        raise ValueError(f"the scorer in {args.scorer} was fitted on the layers "
                         f"{', '.join(fitted)}, in this order; got {', '.join(given)}: "
                         f"give {flags}")
    n_blocks = 1 if blocks is None else len(blocks)
    if len(given) > 1 and n_blocks != len(given):
        raise ValueError(f"the scorer in {args.scorer} was fitted on "
                         f"{'one layer' if n_blocks == 1 else f'{n_blocks} layers'}; got "
                         f"{len(given)} --layer ({', '.join(given)})")


def _write_scores(out: Path, score, pvalue, flagged, paths=None) -> None:
    """``.npz`` (score, pvalue, flagged, and path for files) or ``.csv`` (one row each:
    index or path, score, pvalue, flagged)."""
    from ..._atomic import atomic_path

    with atomic_path(out, suffix=".partial" + out.suffix) as tmp:
        if out.suffix == ".npz":
            extra = {} if paths is None else {"path": np.asarray(paths, dtype=str)}
            with open(tmp, "wb") as fh:
                np.savez(fh, score=score, pvalue=pvalue, flagged=flagged, **extra)
        elif paths is None:
            table = np.column_stack([np.arange(len(score)), score, pvalue, flagged])
            np.savetxt(tmp, table, fmt=["%d", "%.10g", "%.10g", "%d"], delimiter=",",
                       header="index,score,pvalue,flagged", comments="")
        else:
            import csv

            with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["path", "score", "pvalue", "flagged"])
                writer.writerows((p, "%.10g" % s, "%.10g" % v, int(f))
                                 for p, s, v, f in zip(paths, score, pvalue, flagged))
