"""``gaussood score``: scores, p-values and flags of embeddings (or of images, embedded on
the way with the scorer's encoder) under a saved scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._common import load_embeddings, refuse_overwriting_inputs
from .._encoder import add_encoder_flags
from .._identity import check_embeddings, check_layer_embeddings, check_scorer_file
from .._images_for_scorer import embed_for_scorer, image_flags, layer_blocks
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
    enc_file = image_flags(args)
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
        X, paths, skipped = embed_for_scorer(scorer, blocks, args, enc_file)
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
