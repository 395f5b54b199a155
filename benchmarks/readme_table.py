"""Write the README's benchmark table from benchmarks/results/cifar10_ood.json.

    python benchmarks/readme_table.py          # rewrites the block between the markers
    python benchmarks/readme_table.py --print  # only prints it

The block sits between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->``
in README.md; every number in it comes from the JSON (no hand-copied figures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
COLUMNS = [("cifar10", "fashion-mnist", "Fashion-MNIST"), ("cifar10", "svhn", "SVHN"),
           ("cifar10", "cifar100", "CIFAR-100"), ("cifar10", "mnist", "MNIST"),
           ("cifar10", "uniform-noise", "uniform noise"),
           ("cifar10", "gaussian-noise", "Gaussian noise"),
           ("open-set", "cifar10-classes-6-9", "CIFAR-10 classes 6-9 (open-set)"),
           ("fashion-open-set", "fashion-mnist-classes-6-9",
            "Fashion-MNIST classes 6-9 (open-set, ID Fashion-MNIST 0-5)")]


def table(result: dict) -> str:
    settings = result["settings"]
    cols = [(s, k, label) for s, k, label in COLUMNS
            if s in settings and k in settings[s]["data"]["kinds"]]
    methods = list(settings[cols[0][0]]["summary"])

    def auroc(s, k, m):
        entry = settings[s]["summary"].get(m, {})
        return None if "sets" not in entry else 100 * entry["sets"][k]["auroc"]["mean"]

    best = {(s, k): max(v for m in methods if (v := auroc(s, k, m)) is not None)
            for s, k, _ in cols}
    head = ("| method | " + " | ".join(label for _, _, label in cols)
            + f" | false alarms at alpha = {100 * result['config']['alpha']:g}% (CIFAR-10 test) |")
    lines = [head, "|---" * (len(cols) + 2) + "|"]
    for m in methods:
        cells = []
        for s, k, _ in cols:
            v = auroc(s, k, m)
            text = "failed" if v is None else f"{v:.1f}"
            cells.append(f"**{text}**" if v is not None and round(v, 1) == round(best[(s, k)], 1)
                         else text)
        far = settings["cifar10"]["summary"].get(m, {}).get("far") if "cifar10" in settings \
            else None
        cells.append("n/a" if far is None else f"{100 * far['mean']:.2f}%")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    wall = result["wall_seconds"] / 60
    return (f"AUROC (%), mean over seeds {result['config']['seeds']}; "
            f"{wall:.1f} min on {result['environment']['cpu_count']} CPUs. "
            "Bold: best in the column (to one decimal).\n\n" + "\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "cifar10_ood.json")
    p.add_argument("--readme", type=Path, default=REPO / "README.md")
    p.add_argument("--print", action="store_true", dest="print_only")
    args = p.parse_args(argv)
    block = table(json.loads(args.json.read_text()))
    if args.print_only:
        print(block)
        return
    text = args.readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    print(f"rewrote the table in {args.readme}")


if __name__ == "__main__":
    main()
