"""``gaussood fit``: fit a registered scorer on ID embeddings and save it (.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...combine import METHODS
from .._common import load_embeddings, load_npy, refuse_overwriting_inputs
from .._identity import combined_identity, identity_path, read_identity
from ..options import add_scorer_flags, scorer_params

HELP = "fit a scorer on ID embeddings"
DESCRIPTION = ("Fit a scorer on in-distribution embeddings and save it (.npz, no pickle). "
               "Several --embeddings (one per layer, same rows): the scorer is fitted on "
               "each and their p-values combined.")
NEEDS_TORCH = False


def add_arguments(p) -> None:
    p.add_argument("--embeddings", type=Path, required=True, action="append",
                   metavar="X.npy",
                   help="2-D array (n_samples, n_features); repeat for several layers of "
                        "the same images (same rows, e.g. from 'gaussood embed --layer A "
                        "--layer B'): one scorer per file, their p-values combined")
    p.add_argument("--labels", type=Path, default=None, metavar="y.npy",
                   help="class labels: one Gaussian per class (gaussian only)")
    add_scorer_flags(p)
    p.add_argument("--combine", choices=list(METHODS), default=None,
                   help="how the p-values of several --embeddings combine: Fisher's method "
                        "(sum of logs) or the smallest (default: fisher)")
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
    files = args.embeddings
    if args.combine is not None and len(files) == 1:
        parser.error("--combine applies to several --embeddings only")
    if len(set(map(str, files))) != len(files):
        parser.error("an --embeddings file is given twice")
    refuse_overwriting_inputs(parser, [("--out", args.out)],
                              [("--embeddings", f) for f in files] + [("--labels", args.labels)]
                              + [("the encoder identity of --embeddings", identity_path(f))
                                 for f in files])
    Xs = [load_embeddings(f) for f in files]
    X = Xs[0]
    for path, other in zip(files[1:], Xs[1:]):
        if other.shape[0] != X.shape[0]:
            raise ValueError(f"embeddings in {path} have {other.shape[0]} rows but those in "
                             f"{files[0]} have {X.shape[0]}: several --embeddings must be "
                             "layers of the same images, row for row")
    y = None
    if args.labels is not None:
        y = load_npy(args.labels, "labels file")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"labels in {args.labels} must be a 1-D array of {X.shape[0]} "
                             f"labels (one per embedding row); got shape {y.shape}")
        if y.dtype.kind in "iu" and y.size and int(y.min()) < 0:
            raise ValueError(f"labels in {args.labels} contain -1 (unlabelled rows); fit "
                             "without --labels")

    # X.encoder.json, from 'gaussood embed'
    identities = [read_identity(f) for f in files]
    scorer = cls(**params)
    if len(files) > 1:   # one clone per file, each on its block of columns (as OODFilter)
        from ...filter import _per_layer

        scorer = _per_layer(scorer, [part.shape[1] for part in Xs])
        scorer.set_params(method=args.combine or "fisher")
        X = np.hstack(Xs)
    scorer.fit(X, y)
    identity = identities[0] if len(files) == 1 else combined_identity(identities)
    provenance = {} if identity is None else {"encoder_identity": identity}
    if len(files) > 1 and any(i is not None for i in identities):
        provenance["layer_identities"] = identities
    if provenance:
        scorer.provenance_ = provenance
    scorer.save(args.out)
    if scorer.threshold_rule_ == "alpha":
        rule = f"alpha {scorer.alpha_:g}"
    else:
        rule = f"contamination {scorer.contamination:g}"
    offset = ("flags by the CV+ p-value" if np.isnan(scorer.offset_)
              else f"offset {scorer.offset_:.6g}")
    what = type(scorer).__name__
    if len(files) > 1:
        what = (f"{scorer.method} combination of {len(files)} "
                f"{type(scorer.scorers_[0]).__name__}s")
        widths = " + ".join(str(part.shape[1]) for part in Xs)
        X_shape = f"{X.shape[0]} x ({widths})"
    else:
        X_shape = f"{X.shape[0]} x {X.shape[1]}"
    known = ("" if not provenance else " with the encoder identity of the embeddings"
             if len(files) == 1 or all(i is not None for i in identities)
             else " with the encoder identities of some of the embeddings")
    print(f"fitted {what} on {X_shape} embeddings"
          f"{'' if y is None else f' with {np.unique(y).shape[0]} classes'} "
          f"(calibration {scorer.calibration_}, {rule}, {offset}); "
          f"wrote {args.out}{known}")
    return 0
