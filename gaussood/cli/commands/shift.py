"""``gaussood shift``: is a batch of embeddings, as a whole, still in-distribution?"""

from __future__ import annotations

from pathlib import Path

from .._common import RUNTIME_ERRORS, CommandError, load_embeddings, one_line
from .._encoder import add_encoder_flags
from .._identity import check_embeddings, check_scorer_file
from .._images_for_scorer import embed_for_scorer, image_flags, layer_blocks
from ..options import add_scorer_file_flags, param_types

HELP = "test a batch of embeddings for a distribution shift"
DESCRIPTION = ("Test whether a batch of embeddings, as a whole, still looks in-distribution "
               "for a saved scorer (gaussood.shift.test): prints the statistic, p-value and "
               "verdict. The batch: embeddings, or images embedded on the way with the "
               "encoder the scorer was fitted on (torch). Exit status: 0 no shift, 1 shift, "
               "2 bad arguments or bad input.")
NEEDS_TORCH = False


def add_arguments(p) -> None:
    from ...shift import METHODS

    add_scorer_file_flags(p, embeddings_required=False, embeddings_metavar="B.npy",
                          embeddings_help="the batch: 2-D array with the scorer's number of "
                                          "features")
    p.add_argument("--images", type=Path, default=None, metavar="DIR_OR_NPY",
                   help="instead of --embeddings: the batch as a folder of image files or a "
                        "uint8 .npy (N, H, W, 3), embedded with --encoder")
    p.add_argument("--method", choices=list(METHODS), default="ks",
                   help="KS or Fisher or higher criticism on the rows' p-values; Hotelling "
                        "T^2 of the batch mean (gaussian scorers)")
    p.add_argument("--alpha", type=param_types()["alpha"], default=0.05,
                   help="false-alarm rate of the batch test")
    p.add_argument("--reference", type=Path, default=None, metavar="HELD.npy",
                   help="held-out in-distribution embeddings the scorer was not fitted on: "
                        "Hotelling's null becomes an exact permutation test (any data law; "
                        "--method hotelling only)")
    add_encoder_flags(p, required=False)


def run(args) -> int:
    """Batch shift test; exit status 0 no shift, 1 shift, 2 bad arguments or input
    (as ``diff`` and ``cmp``: 1 is the answer here, so errors take 2)."""
    parser = args.parser
    if (args.embeddings is None) == (args.images is None):
        parser.error("give exactly one of --embeddings B.npy and --images DIR_OR_NPY")
    if args.reference is not None and args.method != "hotelling":
        parser.error(f"--reference goes with --method hotelling (got {args.method}); for the "
                     "p-value tests, calibrate the scorer on held-out rows instead")
    enc_file = image_flags(args)
    try:
        check_scorer_file(args.scorer)
        import gaussood
        from ... import shift

        scorer = gaussood.load(args.scorer)
        if args.images is None:
            X = load_embeddings(args.embeddings)
            check_embeddings(scorer, args.scorer, X, args.embeddings, warn_unchecked=False)
        else:
            X = embed_for_scorer(scorer, layer_blocks(scorer), args, enc_file)[0]
        reference = None
        if args.reference is not None:
            reference = load_embeddings(args.reference)
            if reference.shape[1] != X.shape[1]:
                raise ValueError(f"--reference {args.reference} has {reference.shape[1]} "
                                 f"features; the batch has {X.shape[1]}")
        result = shift.test(scorer, X, args.method, args.alpha, reference=reference)
    except RUNTIME_ERRORS as exc:
        raise CommandError(f"{args.parser.prog}: error: {one_line(exc)}") from None
    print(f"{result.method}: statistic {result.statistic:.6g}, p-value {result.pvalue:.4g} "
          f"(n {result.n}, null: {result.null})")
    print(f"{'SHIFT' if result.shift else 'no shift'} at alpha {result.alpha:g}")
    return 1 if result.shift else 0
