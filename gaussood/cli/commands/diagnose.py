"""``gaussood diagnose``: Gaussianity diagnostics of embeddings, beside an exact Gaussian
sample of the same size."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from .._common import json_default, load_embeddings, refuse_overwriting_by_reports, write_text
from ..options import checked, positive_int, positive_int_check

HELP = "Gaussianity diagnostics"
DESCRIPTION = ("Check whether embeddings look Gaussian, beside an exact Gaussian sample of "
               "the same n, d and covariance.")
NEEDS_TORCH = False


def add_arguments(p) -> None:
    p.add_argument("--embeddings", type=Path, required=True, metavar="X.npy",
                   help="2-D array (n_samples, n_features), n >= 20")
    p.add_argument("--max-samples", type=checked(int, positive_int_check("--max-samples",
                                                                         minimum=20),
                                                 "an integer >= 20"), default=5000,
                   help="random subsample of at most this many rows (at least 20)")
    p.add_argument("--projections", type=positive_int, default=128,
                   help="random projections tested")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the subsample, projections and reference sample")
    p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                   help="write report.md, report.json (and figures, where supported)")


def run(args) -> int:
    refuse_overwriting_by_reports(args, ("report.md", "report.json"),
                                  [("--embeddings", args.embeddings)])
    X = load_embeddings(args.embeddings)
    from ...diagnostics import diagnose
    report = diagnose(X, max_samples=args.max_samples, n_projections=args.projections,
                      seed=args.seed)
    markdown = report.to_markdown()
    print(markdown)
    if args.out_dir is not None:
        folder = args.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "report.md", markdown + "\n")
        write_text(folder / "report.json",
                   json.dumps(report.to_dict(), indent=2, default=json_default) + "\n")
        figures = ""
        if hasattr(report, "save_figures"):
            try:
                report.save_figures(folder)
                figures = " and figures"
            except ImportError as exc:  # e.g. no matplotlib: the report itself is written
                warnings.warn(f"figures skipped: {exc}", UserWarning, stacklevel=1)
        print(f"wrote {folder / 'report.md'} and {folder / 'report.json'}{figures}",
              file=sys.stderr)
    return 0
