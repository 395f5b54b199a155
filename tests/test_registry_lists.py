"""Lists that come from the registries, and the docs tables that restate them.

Each docs table here names what gaussood ships (scorers, datasets, benchmark rows,
Dask routes); these tests fail when the code and the table part ways. A scorer,
dataset or benchmark row added in code is then one more table row, which the failing
test names. The last test registers a throwaway scorer (in this file only) and follows
it through every front end that reads the scorer registry.
"""

import re
from pathlib import Path

import pytest

from gaussood._registry import registered_scorers

ROOT = Path(__file__).resolve().parents[1]


def _shipped() -> dict:
    """The registered scorers gaussood ships (not those other tests define)."""
    return {name: cls for name, cls in registered_scorers().items()
            if cls.__module__.split(".")[0] == "gaussood"}


def _table(page: str, header: str) -> dict:
    """``{first cell: other cells}`` of the Markdown table whose header row starts with
    ``header`` in ``docs/<page>``."""
    lines = (ROOT / "docs" / page).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _row(page: str, start: str) -> str:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if line.startswith(start))


def test_cli_md_names_every_scorer_and_its_calibrations():
    scorers = _shipped()
    named = dict(re.findall(r"`([\w-]+)` \(`(\w+)`\)", _row("cli.md", "| `--scorer` |")))
    assert named == {name: cls.__name__ for name, cls in scorers.items()}
    laws = dict(re.findall(r"([\w-]+) `([\w/+]+)`", _row("cli.md", "| `--calibration` |")))
    assert laws == {name: "/".join(("auto",) + tuple(cls._calibrations))
                    for name, cls in scorers.items()}


def test_scale_md_gives_the_dask_route_of_every_scorer():
    pytest.importorskip("dask.array")
    import gaussood.dask as gd

    table = {cell.strip("`"): rest[0].split(":")[0]
             for cell, rest in _table("scale.md", "| scorer | `fit` on Dask |").items()}
    supported = gd.supported_scorers()
    assert table == {name: supported[name] for name in _shipped()}


def test_dataset_lists_match_datasets():
    pytest.importorskip("torch")
    from gaussood.deep.data import DATASETS

    names = _row("cli.md", "  Names: ").strip().removeprefix("Names: ").rstrip(".")
    assert names.split(", ") == list(DATASETS)
    listed = set()
    for cell in _table("training.md", "| name | where it is read from |"):
        listed |= set(re.findall(r"`([\w-]+)`", cell))
    assert listed == set(DATASETS)


def test_training_md_describes_every_model():
    pytest.importorskip("torch")
    from gaussood.deep.models import MODELS

    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    paragraph = text[text.index("- Models (`gaussood.deep.models.MODELS`"):]
    paragraph = paragraph[:paragraph.index("\n- ")]
    assert set(re.findall(r'`"([\w-]+)"`', paragraph)) == set(MODELS)


def test_getting_started_rows_are_the_benchmark_scorers():
    pytest.importorskip("torch")
    from gaussood.deep.evaluate import default_scorers

    rows = list(_table("getting-started.md", "| row | what it is |"))
    ours = [r for r in rows if not r.startswith(("pytorch-ood", "sklearn"))]
    assert ours == list(default_scorers())
