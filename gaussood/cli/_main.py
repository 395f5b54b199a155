"""The ``gaussood`` parser and runner: the ``COMMANDS`` table, exit statuses, signals.

A command is a module of ``gaussood.cli.commands`` with ``HELP`` (its line in
``gaussood --help``), ``DESCRIPTION``, ``NEEDS_TORCH`` (its options are built on the
torch side, so they are added only when that command runs), ``add_arguments(parser)``
and ``run(args) -> int`` (``args.parser`` is its own parser, for ``args.parser.error``).
``COMMANDS`` lists them in ``gaussood --help`` order; the parser, ``TORCH_COMMANDS``
and the package docstring are built from it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

from ._common import PROG, RUNTIME_ERRORS, CommandError, need_torch, one_line
from .commands import bench, diagnose, embed, fit, score, shift, train

COMMANDS = {"train": train, "embed": embed, "fit": fit, "score": score, "shift": shift,
            "diagnose": diagnose, "bench": bench}
TORCH_COMMANDS = tuple(name for name, module in COMMANDS.items() if module.NEEDS_TORCH)


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and never exit the process."""

    def error(self, message):
        raise CommandError(f"{self.prog}: error: {one_line(message)}")

    def exit(self, status=0, message=None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


class _Help(argparse.HelpFormatter):
    """Shows defaults that say something (not None, not False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is not None and default is not False and default != argparse.SUPPRESS
                and "%(default)" not in text
                and action.option_strings and "default" not in text):
            text += " (default: %(default)s)"
        return text


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``command`` (one of ``TORCH_COMMANDS``) adds that command's torch-side
    options."""
    from .. import __version__

    parser = _Parser(prog=PROG, description=(
        "Out-of-distribution detection on contrastive embeddings: train an encoder, "
        "embed images, fit a scorer, score new embeddings."),
        epilog="Run 'gaussood <command> --help' for the options of a command. Exit status: "
               "0 ok, 1 runtime error (missing or invalid file/data), 2 bad arguments.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, formatter_class=_Help, help=module.HELP,
                           description=module.DESCRIPTION)
        p.set_defaults(handler=module.run, parser=p)
        if not module.NEEDS_TORCH or command == name:
            module.add_arguments(p)
    return parser


# the library's words for what the command line calls an option, in its warnings
_OPTION_WORDS = (("(strict=True raises instead)", "(--strict stops instead)"),
                 ("Pass preprocessing= to", "Pass --preprocessing JSON to"),
                 ("Pass weights=PATH to", "Pass --weights FILE with"))


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Show warnings as ``gaussood <command>: warning: <message>`` (one line each)."""
    with warnings.catch_warnings():
        def show(message, category, filename, lineno, file=None, line=None):
            text = one_line(message)
            for library, option in _OPTION_WORDS:
                text = text.replace(library, option)
            sys.stderr.write(f"{prog}: warning: {text}\n")
        warnings.showwarning = show
        yield


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that partial outputs are removed."""


@contextlib.contextmanager
def _terminate_cleanly():
    """Turn SIGTERM into an exception while a command runs (unless someone else
    already handles it), so that every atomic write removes its temporary file."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum, frame):
        raise _Terminated()
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(prog: str, fn, *fn_args) -> int:
    with _one_line_warnings(prog), _terminate_cleanly():
        try:
            return fn(*fn_args)
        except CommandError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            return 130
        except _Terminated:
            sys.stderr.write(f"{prog}: terminated\n")
            return 143
        except RUNTIME_ERRORS as exc:
            if os.environ.get("GAUSSOOD_DEBUG"):
                raise
            message = one_line(exc) or type(exc).__name__
            if isinstance(exc, KeyError):
                message = f"missing key {message}"
            sys.stderr.write(f"{prog}: error: {message}\n")
            return 1
        except Exception as exc:  # a bug or an unexpected library error: still one line
            if os.environ.get("GAUSSOOD_DEBUG"):
                raise
            sys.stderr.write(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} "
                             "(set GAUSSOOD_DEBUG=1 to see the traceback)\n")
            return 1


def main(argv=None) -> int:
    """Run the command line; return the exit status (never raises SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = argv[0] if argv and argv[0] in TORCH_COMMANDS else None
        try:
            if command is not None:
                need_torch(command)
            parser = build_parser(command)
        except ImportError as exc:
            sys.stderr.write(f"{PROG} {command}: error: {one_line(exc)}\n")
            return 1
        try:
            args = parser.parse_args(argv)
        except CommandError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        args.argv = argv
        return _run(args.parser.prog, args.handler, args)
    except SystemExit as exc:  # --help, --version, or a forwarded parser exiting
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
