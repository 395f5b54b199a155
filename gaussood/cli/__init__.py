"""The ``gaussood`` command line: {commands}.

Each subcommand reads and writes plain files (``.npy`` arrays, ``.npz`` scorers,
``.pt`` encoders, image folders), so a pipeline is a few shell lines::

    gaussood train --out enc.pt
    gaussood embed --encoder enc.pt --dataset cifar10 --split train --out id.npy
    gaussood fit --embeddings id.npy --scorer gaussian --alpha 0.05 --out scorer.npz
    gaussood score --scorer scorer.npz --images photos/ --encoder enc.pt --out scores.csv

An encoder is a spec from the caller: a gaussood or TorchScript file, ``torchvision:NAME``
(``--weights FILE``) or ``package.module:factory``; nothing named inside a file is
imported or built. ``embed`` writes the encoder's identity (weights SHA-256, feature
layer, preprocessing) beside the embeddings (``X.encoder.json``), ``fit`` stores it with
the scorer (``provenance_``), and ``score --images`` refuses another encoder.

torch is imported only by {torch_commands} and ``score --images``; the other commands
need numpy, scipy, scikit-learn and faiss only. Errors are one line on stderr,
``gaussood <command>: error: <message>``; exit status 2 for bad arguments, 1 for errors
while running (missing or unreadable files, invalid data), 0 otherwise (``shift``: 1 is
its answer "shift", errors take 2; 130 after Ctrl-C, 143 after SIGTERM).
Every output is written to a temporary name and renamed when complete (companion
files such as ``X.labels.npy`` only after the main output; SIGTERM removes the
temporary files), and an output that would replace one of the command's inputs
(or ``train``'s resume checkpoint) is refused with exit status 2. Scorer options are
parsed with the scorers' own ``_parameter_constraints`` (``gaussood.cli.options``).

Each command is one module of ``gaussood.cli.commands`` (``add_arguments(parser)``,
``run(args)``), listed in ``COMMANDS``; the parser, ``TORCH_COMMANDS`` and this list
are built from that table.
"""

from ._common import PROG, CommandError
from ._main import COMMANDS, TORCH_COMMANDS, build_parser, main

__all__ = ["main", "build_parser", "COMMANDS", "TORCH_COMMANDS", "CommandError", "PROG"]

__doc__ = __doc__.format(
    commands=", ".join(COMMANDS),
    torch_commands=", ".join(f"``{name}``" for name in TORCH_COMMANDS))
