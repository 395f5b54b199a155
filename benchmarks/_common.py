"""Shared bits of the benchmark scripts: environment record and result writing."""

from __future__ import annotations

import json
from pathlib import Path

from gaussood._atomic import atomic_path
from gaussood._env import environment  # noqa: F401  (re-exported for the scripts)

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, result: dict, table: str, folder: Path = RESULTS, *,
                  indent: int = 2) -> None:
    """Write ``name.json`` and ``name.md`` in ``folder`` (each atomically) and print the table."""
    with atomic_path(Path(folder) / f"{name}.json") as tmp, open(tmp, "w") as fh:
        fh.write(json.dumps(result, indent=indent, default=str) + "\n")
    with atomic_path(Path(folder) / f"{name}.md") as tmp, open(tmp, "w") as fh:
        fh.write(table.rstrip() + "\n")
    print(table)
    print(f"\nwrote {Path(folder) / name}.json and .md")
