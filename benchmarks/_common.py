"""Shared bits of the benchmark scripts: environment record and result writing."""

from __future__ import annotations

import json
from pathlib import Path

from gaussood._env import environment  # noqa: F401  (re-exported for the scripts)

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, result: dict, table: str, folder: Path = RESULTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (folder / f"{name}.md").write_text(table.rstrip() + "\n")
    print(table)
    print(f"\nwrote {folder / name}.json and .md")
