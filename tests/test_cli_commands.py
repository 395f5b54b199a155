"""The command table: a command is one module of gaussood/cli/commands registered in
COMMANDS, and everything else (parser, --help, TORCH_COMMANDS, docstring) follows."""

import importlib
import pkgutil
import re
import types
from pathlib import Path

from gaussood import cli
from gaussood.cli import _main, commands

ROOT = Path(__file__).resolve().parents[1]


def _command_modules() -> dict:
    return {info.name: importlib.import_module(f"{commands.__name__}.{info.name}")
            for info in pkgutil.iter_modules(commands.__path__)}


def test_every_command_module_is_in_the_table_and_documented():
    modules = _command_modules()
    assert set(modules) == set(cli.COMMANDS)
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, module in cli.COMMANDS.items():
        assert module is modules[name]
        assert callable(module.add_arguments) and callable(module.run)
        assert isinstance(module.HELP, str) and isinstance(module.DESCRIPTION, str)
        assert isinstance(module.NEEDS_TORCH, bool)
        assert f"## `gaussood {name}`" in page, f"docs/cli.md has no section for {name}"
    assert cli.TORCH_COMMANDS == tuple(n for n, m in cli.COMMANDS.items() if m.NEEDS_TORCH)
    first_line = cli.__doc__.splitlines()[0]
    assert first_line.endswith(": " + ", ".join(cli.COMMANDS) + ".")


def test_help_lists_every_command_in_table_order():
    text = cli.build_parser().format_help()
    listed = re.findall(r"^    (\w+)\s+(.*)$", text, re.M)
    assert [name for name, _ in listed] == list(cli.COMMANDS)
    for name, line in listed:
        assert cli.COMMANDS[name].HELP.startswith(line.strip())


def test_a_new_command_is_one_module_in_the_table(monkeypatch, capsys):
    hello = types.ModuleType("hello")
    hello.HELP, hello.DESCRIPTION, hello.NEEDS_TORCH = "say hello", "Say hello.", False
    hello.add_arguments = lambda p: p.add_argument("--times", type=int, default=1)

    def run(args):
        if args.times < 0:
            args.parser.error("--times must be >= 0")
        print("hello " * args.times)
        return 3 if args.times == 3 else 0
    hello.run = run
    monkeypatch.setitem(_main.COMMANDS, "hello", hello)

    assert cli.main(["hello", "--times", "3"]) == 3
    assert capsys.readouterr().out == "hello hello hello \n"
    assert cli.main(["hello", "--times", "-1"]) == 2
    assert capsys.readouterr().err == "gaussood hello: error: --times must be >= 0\n"
    assert cli.main(["hello", "--nope"]) == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    assert "say hello" in cli.build_parser().format_help()


def test_benchmarks_use_the_public_options_module():
    for script in (ROOT / "benchmarks").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        assert not re.search(r"from gaussood\.cli[\w.]* import .*\b_\w", text), \
            f"{script.name} imports a private name of gaussood.cli"


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "gaussood").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, f"split these modules (over 600 lines): {long}"
