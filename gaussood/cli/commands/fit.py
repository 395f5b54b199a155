"""``gaussood fit``: fit a registered scorer on ID embeddings and save it (.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._common import load_embeddings, load_npy, refuse_overwriting_inputs
from .._identity import read_identity
from ..options import add_scorer_flags, scorer_params

HELP = "fit a scorer on ID embeddings"
DESCRIPTION = "Fit a scorer on in-distribution embeddings and save it (.npz, no pickle)."
NEEDS_TORCH = False


def add_arguments(p) -> None:
    p.add_argument("--embeddings", type=Path, required=True, metavar="X.npy",
                   help="2-D array (n_samples, n_features)")
    p.add_argument("--labels", type=Path, default=None, metavar="y.npy",
                   help="class labels: one Gaussian per class (gaussian only)")
    add_scorer_flags(p)
    p.add_argument("--out", type=Path, required=True, metavar="scorer.npz",
                   help="fitted scorer to write (load it with gaussood.load)")


def run(args) -> int:
    from ..._registry import registered_scorers

    parser = args.parser
    cls = registered_scorers()[args.scorer]
    if args.labels is not None and not cls._fit_uses_labels:
        users = [k for k, c in registered_scorers().items() if c._fit_uses_labels]
        parser.error(f"--labels applies to --scorer {' or '.join(users)} only")
    params = scorer_params(args, parser, cls)
    refuse_overwriting_inputs(parser, [("--out", args.out)],
                              [("--embeddings", args.embeddings), ("--labels", args.labels)])
    X = load_embeddings(args.embeddings)
    y = None
    if args.labels is not None:
        y = load_npy(args.labels, "labels file")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"labels in {args.labels} must be a 1-D array of {X.shape[0]} "
                             f"labels (one per embedding row); got shape {y.shape}")
        if y.dtype.kind in "iu" and y.size and int(y.min()) < 0:
            raise ValueError(f"labels in {args.labels} contain -1 (unlabelled rows); fit "
                             "without --labels")

    identity = read_identity(args.embeddings)   # X.encoder.json, from 'gaussood embed'
    scorer = cls(**params)
    scorer.fit(X, y)
    if identity is not None:
        scorer.provenance_ = {"encoder_identity": identity}
    scorer.save(args.out)
    if scorer.threshold_rule_ == "alpha":
        rule = f"alpha {scorer.alpha_:g}"
    else:
        rule = f"contamination {scorer.contamination:g}"
    offset = ("flags by the CV+ p-value" if np.isnan(scorer.offset_)
              else f"offset {scorer.offset_:.6g}")
    print(f"fitted {type(scorer).__name__} on {X.shape[0]} x {X.shape[1]} embeddings"
          f"{'' if y is None else f' with {np.unique(y).shape[0]} classes'} "
          f"(calibration {scorer.calibration_}, {rule}, {offset}); "
          f"wrote {args.out}"
          f"{'' if identity is None else ' with the encoder identity of the embeddings'}")
    return 0
