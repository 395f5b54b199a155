"""``gaussood shift``: is a batch of embeddings, as a whole, still in-distribution?"""

from __future__ import annotations

from pathlib import Path

from .._common import RUNTIME_ERRORS, CommandError, load_embeddings, one_line
from .._identity import check_embeddings, check_scorer_file
from ..options import add_scorer_file_flags, param_types

HELP = "test a batch of embeddings for a distribution shift"
DESCRIPTION = ("Test whether a batch of embeddings, as a whole, still looks in-distribution "
               "for a saved scorer (gaussood.shift.test): prints the statistic, p-value and "
               "verdict. Exit status: 0 no shift, 1 shift, 2 bad arguments or bad input.")
NEEDS_TORCH = False


def add_arguments(p) -> None:
    from ...shift import METHODS

    add_scorer_file_flags(p, embeddings_required=True, embeddings_metavar="B.npy",
                          embeddings_help="the batch: 2-D array with the scorer's number of "
                                          "features")
    p.add_argument("--method", choices=list(METHODS), default="ks",
                   help="KS or Fisher or higher criticism on the rows' p-values; Hotelling "
                        "T^2 of the batch mean (gaussian scorers)")
    p.add_argument("--alpha", type=param_types()["alpha"], default=0.05,
                   help="false-alarm rate of the batch test")


def run(args) -> int:
    """Batch shift test; exit status 0 no shift, 1 shift, 2 bad arguments or input
    (as ``diff`` and ``cmp``: 1 is the answer here, so errors take 2)."""
    try:
        check_scorer_file(args.scorer)
        import gaussood
        from ... import shift

        X = load_embeddings(args.embeddings)
        scorer = gaussood.load(args.scorer)
        check_embeddings(scorer, args.scorer, X, args.embeddings, warn_unchecked=False)
        result = shift.test(scorer, X, args.method, args.alpha)
    except RUNTIME_ERRORS as exc:
        raise CommandError(f"{args.parser.prog}: error: {one_line(exc)}") from None
    print(f"{result.method}: statistic {result.statistic:.6g}, p-value {result.pvalue:.4g} "
          f"(n {result.n}, null: {result.null})")
    print(f"{'SHIFT' if result.shift else 'no shift'} at alpha {result.alpha:g}")
    return 1 if result.shift else 0
