"""One module per ``gaussood`` command, each registered in ``gaussood.cli.COMMANDS``.

A command module defines ``HELP`` (its line in ``gaussood --help``), ``DESCRIPTION``
(the top of ``gaussood <command> --help``), ``NEEDS_TORCH`` (True when its options are
built from the torch side, e.g. dataset or model names: they are then added only when
that command runs, so ``gaussood --help`` never imports torch), ``add_arguments(parser)``
and ``run(args) -> int`` (the exit status; ``args.parser.error`` for usage errors).
"""
