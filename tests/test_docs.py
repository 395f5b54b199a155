"""Every fenced code block of README.md and docs/**/*.md runs here, one test per block.

How a block is treated (docs/contributing.md, "Code blocks in the docs are tests"):

- ```python: executed. Blocks of one page share one namespace and one temporary working
  directory, in page order; the directory holds links to the repository's top-level files
  and folders (``benchmarks/checkpoints/...`` resolves), and ``GAUSSOOD_DATA`` is set to
  ``../shared/data`` when it holds the CIFAR-10 archive and is not set already. A block
  with ``>>>`` lines is a doctest (its printed output is compared).
- ```bash / ```sh: every command is checked first: each ``gaussood ...`` line is parsed by
  the real argument parser (unknown commands, options or values fail), ``python -c`` code
  must compile, ``python script.py --flag`` needs the script and the flag in its ``--help``,
  ``python -m mod`` an importable module, ``make target`` a Makefile target and
  ``pip install ".[extra]"`` an extra of pyproject.toml. Then the block runs in the page's
  working directory with ``bash -e``, the virtual environment's ``bin`` first on PATH.
- Blocks without a language (or ``text``, ``console``) are diagrams and transcripts: not run.

A comment on the line right before a block changes that:

    <!-- doctest: skip (trains an encoder for 20 minutes) -->   never run; python blocks
        are still compiled and bash commands still checked
    <!-- doctest: slow (embeds 50,000 images) -->   runs only with ``-m slow``
    <!-- doctest: needs-data (CIFAR-10) -->   skipped when the CIFAR-10 archive is absent

Kinds combine (``<!-- doctest: slow, needs-data (...) -->``); the reason in parentheses is
required. Earlier blocks of a page that the running block depends on run first, so a
single block can be selected with ``-k``.
"""
from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
KINDS = {"skip", "slow", "needs-data"}
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MARKER = re.compile(r"<!--\s*doctest:\s*(?P<kinds>[^(]*?)\s*\((?P<reason>.*)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
BLOCK_TIMEOUT_S = 600

# Markers of docs/cli.md blocks, kept here while that page is being rewritten by someone
# else: move them into the page as <!-- doctest: ... --> comments (the text is the start
# of the block's first line). test_external_markers_match fails when one goes stale.
EXTERNAL_MARKERS = {
    ("docs/cli.md", "export GAUSSOOD_DATA=../shared/data"):
        ("skip", "trains an encoder (20 min), then embeds all of CIFAR-10 and SVHN"),
    ("docs/cli.md", "python -c"):
        ("slow", "the README's command-line block runs the same commands by default"),
    ("docs/cli.md", "gaussood train --dataset cifar10 --classes 0-5"):
        ("skip", "trains an encoder"),
    ("docs/cli.md", "gaussood embed --encoder small.pt --dataset fashion-mnist"):
        ("skip", "needs small.pt from the training run, photos/ and ResNet-50 weights"),
    ("docs/cli.md", "gaussood fit --embeddings id_train.npy --labels"):
        ("skip", "needs id_train.npy from the whole run above"),
    ("docs/cli.md", "gaussood score --scorer gauss.npz --embeddings svhn.npy"):
        ("skip", "needs the files of the whole run above"),
    ("docs/cli.md", "gaussood diagnose --embeddings id_train.npy --max-samples"):
        ("skip", "needs id_train.npy from the whole run above"),
    ("docs/cli.md", "gaussood bench --encoder benchmarks/checkpoints/cifar10-cpu.pt"):
        ("skip", "the second line needs enc.pt and SVHN/CIFAR-100; the quick bench is "
                 "run by CI's make bench-quick"),
}


@dataclass
class Block:
    page: str          # path relative to the repository root
    line: int          # 1-based line of the opening fence
    lang: str          # "python", "bash" or "" (not run)
    text: str          # dedented body
    kinds: set = field(default_factory=set)
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_doctest(self) -> bool:
        return any(ln.lstrip().startswith(">>>") for ln in self.text.splitlines())


def parse_page(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page with their markers; bad markers raise."""
    rel = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if "<!-- doctest" in lines[i] and not MARKER.search(lines[i].strip()):
                raise ValueError(f"{rel}:{i + 1}: malformed marker (want "
                                 "'<!-- doctest: skip (reason) -->'): {lines[i].strip()}")
            i += 1
            continue
        start, fence = i, m.group("fence")
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        body = textwrap.dedent("\n".join(lines[start + 1:i]))
        i += 1
        lang = RUN_LANGS.get(m.group("lang").lower(), "")
        block = Block(rel, start + 1, lang, body + "\n")
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = MARKER.search(lines[prev].strip()) if prev >= 0 else None
        ext = next((v for (page, head), v in EXTERNAL_MARKERS.items()
                    if page == rel and body.lstrip().startswith(head)), None)
        if marker:
            kinds = {k.strip() for k in marker.group("kinds").split(",") if k.strip()}
            reason = marker.group("reason").strip()
        elif ext:
            kinds, reason = {ext[0]}, ext[1]
        else:
            kinds, reason = set(), ""
        if kinds - KINDS or (kinds and not reason):
            raise ValueError(f"{rel}:{prev + 1}: marker kinds must be among {sorted(KINDS)} "
                             f"with a reason in parentheses, got {lines[prev].strip()!r}")
        block.kinds, block.reason = kinds, reason
        blocks.append(block)
    return blocks


BLOCKS = [b for page in PAGES for b in parse_page(page)]
RUN_BLOCKS = [b for b in BLOCKS if b.lang]


def _params():
    return [pytest.param(b, id=f"{b.id}-{b.lang}",
                         marks=[pytest.mark.slow] if "slow" in b.kinds else [])
            for b in RUN_BLOCKS]


# ----------------------------------------------------------------- environment
def data_root() -> Path | None:
    """The folder with the CIFAR-10 archive: $GAUSSOOD_DATA, else ../shared/data."""
    for root in (os.environ.get("GAUSSOOD_DATA"), ROOT.parent / "shared" / "data"):
        if root and (Path(root) / "cifar10_jpeg_q75.tar.xz").exists():
            return Path(root).resolve()
    return None


def block_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MPLBACKEND", "Agg")
    root = data_root()
    if root is not None and not env.get("GAUSSOOD_DATA"):
        env["GAUSSOOD_DATA"] = str(root)
    return env


@contextlib.contextmanager
def page_context(directory: Path):
    """cwd, environment and sys.path for a python block (restored afterwards)."""
    old_cwd, old_env, old_path = os.getcwd(), dict(os.environ), list(sys.path)
    os.chdir(directory)
    os.environ.clear()
    os.environ.update(block_env())
    sys.path.insert(0, str(ROOT))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        sys.path[:] = old_path


class Page:
    """One page's namespace and working directory, and which of its blocks ran."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ns = {"__name__": "__doc_block__"}
        self.done: dict[int, str | None] = {}   # line -> None (ok) or the failure
        for entry in ROOT.iterdir():
            if entry.name.startswith(".") or entry.name in ("build", "dist"):
                continue
            (directory / entry.name).symlink_to(entry)


@pytest.fixture(scope="session")
def pages(tmp_path_factory):
    made = {}

    def get(name: str) -> Page:
        if name not in made:
            made[name] = Page(tmp_path_factory.mktemp(re.sub(r"\W", "_", name)))
        return made[name]
    return get


def skip_reason(block: Block, selected_slow: bool) -> str | None:
    if "skip" in block.kinds:
        return f"doctest: skip ({block.reason})"
    if "needs-data" in block.kinds and data_root() is None:
        return f"needs the CIFAR-10 archive in $GAUSSOOD_DATA ({block.reason})"
    if "slow" in block.kinds and not selected_slow:
        return f"doctest: slow ({block.reason})"
    return None


# ---------------------------------------------------------------- running blocks
def run_python(block: Block, page: Page) -> None:
    path = ROOT / block.page
    with page_context(page.dir):
        if block.is_doctest:
            test = doctest.DocTestParser().get_doctest(block.text, page.ns, block.id,
                                                       str(path), block.line)
            out = io.StringIO()
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            runner.run(test, out=out.write, clear_globs=False)
            page.ns.update(test.globs)      # DocTest works on a copy of the namespace
            if runner.failures:
                raise AssertionError(f"doctest of {block.id} failed:\n{out.getvalue()}")
        else:
            # blank lines in front: tracebacks give the line numbers of the Markdown file
            code = compile("\n" * block.line + block.text, str(path), "exec")
            exec(code, page.ns)


def run_bash(block: Block, page: Page) -> None:
    script = page.dir / f"_block_{block.line}.sh"
    script.write_text(block.text)
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", str(script)], cwd=page.dir,
                          env=block_env(), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    if proc.returncode:
        raise AssertionError(f"{block.id}: bash exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                             f"{proc.stderr[-5000:]}")


def run_block(block: Block, page: Page) -> None:
    try:
        (run_python if block.lang == "python" else run_bash)(block, page)
    except BaseException as exc:
        page.done[block.line] = f"{type(exc).__name__}: {exc}"
        raise
    page.done[block.line] = None


# ----------------------------------------------------------- checking commands
def logical_lines(text: str):
    """Shell commands of a block: continuations joined, quotes spanning lines kept."""
    buf = ""
    for raw in text.splitlines():
        buf = f"{buf}\n{raw}" if buf else raw
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        try:
            words = shlex.split(buf, comments=True)
        except ValueError:      # an open quote: the command goes on
            continue
        if words:
            yield words
        buf = ""
    if buf.strip():
        raise AssertionError(f"unterminated command: {buf!r}")


def _makefile_targets() -> set:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def _extras() -> set:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return set(tomllib.load(fh)["project"]["optional-dependencies"])


_HELP: dict = {}


def _script_help(script: Path) -> str:
    if script not in _HELP:
        proc = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT,
                              env=block_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{script} --help failed:\n{proc.stderr[-2000:]}"
        _HELP[script] = proc.stdout
    return _HELP[script]


def check_gaussood(argv: list, where: str) -> None:
    from gaussood import cli

    if not argv or argv[0] in ("--help", "-h", "--version"):
        return
    command = argv[0] if argv[0] in cli.TORCH_COMMANDS else None
    if command is not None:
        pytest.importorskip("torch")
    parser = cli.build_parser(command)
    try:
        args = parser.parse_args(argv)
    except cli.CommandError as exc:
        raise AssertionError(f"{where}: gaussood {shlex.join(argv)}: {exc}") from None
    except SystemExit as exc:     # --help of a subcommand
        assert not exc.code, f"{where}: gaussood {shlex.join(argv)} exited {exc.code}"
        return
    assert args.command, f"{where}: no gaussood command in {argv}"


def check_python(argv: list, where: str) -> None:
    if argv[:1] == ["-c"]:
        compile(argv[1], where, "exec")
        return
    if argv[:1] == ["-m"]:
        import importlib.util
        assert importlib.util.find_spec(argv[1].split()[0]) is not None, \
            f"{where}: no module {argv[1]}"
        return
    script = ROOT / argv[0]
    assert script.is_file(), f"{where}: no script {argv[0]}"
    flags = [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
    if flags:
        help_text = _script_help(script)
        missing = [f for f in flags if not re.search(re.escape(f) + r"\b", help_text)]
        assert not missing, f"{where}: {argv[0]} has no option {missing}"


def check_commands(block: Block) -> None:
    """Parse every command of a bash block (see the module docstring)."""
    variables = dict(os.environ)
    for words in logical_lines(block.text):
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):      # VAR=value
            name, _, value = words.pop(0).partition("=")
            variables[name] = value
        if words[:1] == ["export"]:
            for w in words[1:]:
                name, _, value = w.partition("=")
                variables[name] = value
            continue
        words = [re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), w)
                 for w in words]
        if not words:
            continue
        head, rest = words[0], words[1:]
        where = f"{block.id}: {shlex.join(words)[:80]}"
        if head == "gaussood":
            check_gaussood(rest, where)
        elif Path(head).name in ("python", "python3"):
            check_python(rest, where)
        elif head == "make":
            missing = [t for t in rest if not t.startswith("-") and "=" not in t
                       and t not in _makefile_targets()]
            assert not missing, f"{where}: no Makefile target {missing}"
        elif head == "pip" and rest[:1] == ["install"]:
            for spec in rest[1:]:
                m = re.search(r"\[([\w,-]+)\]", spec)
                if m:
                    unknown = set(m.group(1).split(",")) - _extras()
                    assert not unknown, f"{where}: no extra {sorted(unknown)} in pyproject.toml"


# ------------------------------------------------------------------------ tests
@pytest.mark.parametrize("block", _params())
def test_doc_block(block: Block, pages, request):
    if block.lang == "python":
        compile("\n" * block.line + ("" if block.is_doctest else block.text),
                str(ROOT / block.page), "exec")
    else:
        check_commands(block)
    selected_slow = "not slow" not in (request.config.getoption("-m") or "")
    reason = skip_reason(block, selected_slow)
    if reason:
        pytest.skip(reason)
    page = pages(block.page)
    for earlier in RUN_BLOCKS:          # the blocks this one may depend on, in order
        if earlier.page != block.page or earlier.line >= block.line:
            continue
        if earlier.line not in page.done and skip_reason(earlier, selected_slow) is None:
            run_block(earlier, page)
        if page.done.get(earlier.line):
            pytest.fail(f"an earlier block of the page failed: {earlier.id}: "
                        f"{page.done[earlier.line][:500]}")
    if block.line in page.done:     # already run as a dependency of a later block
        if page.done[block.line]:
            pytest.fail(page.done[block.line])
        return
    run_block(block, page)


def test_every_block_is_classified():
    """No unknown languages slip through: a block is python, bash or a plain text block."""
    assert RUN_BLOCKS, "no code blocks found"
    for b in BLOCKS:
        if not b.lang:
            assert not b.kinds, f"{b.id}: a marker on a block that never runs"


def test_external_markers_match():
    for page, head in EXTERNAL_MARKERS:
        assert any(b.page == page and b.text.lstrip().startswith(head) for b in BLOCKS), \
            f"EXTERNAL_MARKERS entry matches no block of {page}: {head!r}"


def test_api_md_is_generated():
    """docs/api.md is the output of docs/make_api.py (run it after changing a docstring)."""
    pytest.importorskip("torch")
    pytest.importorskip("dask")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    assert make_api.OUT.read_text(encoding="utf-8") == make_api.render(), \
        "docs/api.md is out of date: run python docs/make_api.py"
