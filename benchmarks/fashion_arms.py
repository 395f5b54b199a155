"""The Fashion-MNIST open-set recipe arms as one table (issue 20).

Reads what ``benchmarks/fashion_arms.sh`` wrote into ``benchmarks/results/fashion_arms/``
(each arm's training record ``fashion-mnist-cpu-c0to5-<arm>.json`` and its bench
``fashion-open-<arm>.json``) and writes ``fashion_arms.md`` there: per arm and seed, the
6-class k-NN (full protocol), the OOD-proxy monitor at the end of training (no OOD data),
the training minutes, and the open-set AUROC of the default detector, of the best
Gaussian-family row and of cosine k-NN, with the default detector's false alarms. The
base arm's seed-0 training record is the shipped-before encoder's,
``benchmarks/results/fashion-mnist-cpu-c0to5.json``. Bench files with test-time views
(``--views``) get their own rows.

    python benchmarks/fashion_arms.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ARMS = RESULTS / "fashion_arms"
SETTING, OOD = "fashion-open-set", "fashion-mnist-classes-6-9"
DEFAULT = "Gaussian views: raw + L2 + relative L2 (Fisher; default)"
COSINE = "kNN (k=50, cosine)"
NOT_GAUSSIAN = ("kNN", "Norm shell", "pytorch-ood", "sklearn")
WHAT = {"base": "the shipped-before recipe (InfoNCE, 12 epochs, 16:0.75,32 px)",
        "rotneg": "rotations as shifted negatives (`--rotation negatives`)",
        "end16": "16 px throughout (no 32 px phase)",
        "reg": "the paper's regulariser (norm 0.005, entropy 0.01)",
        "crop30": "crops from 30% of the area (default 8%)",
        "crop50": "crops from 50% of the area (default 8%)"}


def split_arm(arm: str) -> tuple[str, int]:
    """``"rotneg-s1"`` -> ``("rotneg", 1)``; no suffix: seed 0."""
    m = re.fullmatch(r"(.*)-s(\d+)", arm)
    return (m.group(1), int(m.group(2))) if m else (arm, 0)


def training(arm: str) -> dict | None:
    """k-NN, proxy and minutes from an arm's training record (None when missing)."""
    path = ARMS / f"fashion-mnist-cpu-c0to5-{arm}.json"
    if arm == "base":
        path = RESULTS / "fashion-mnist-cpu-c0to5.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    prov = rec.get("provenance", rec)
    proxy = next((h["proxy_auroc"] for h in reversed(rec.get("history", []))
                  if h.get("proxy_auroc")), {})
    return {"knn": prov.get("knn_top1"), "proxy": proxy.get("mean"),
            "minutes": prov["train_seconds"] / 60}


def bench(path: Path) -> dict:
    """AUROCs (%) and the default detector's false alarms from one bench file."""
    data = json.loads(path.read_text())
    summary = data["settings"][SETTING]["summary"]
    auroc = {m: 100 * s["sets"][OOD]["auroc"]["mean"] for m, s in summary.items()}
    gauss = {m: a for m, a in auroc.items() if not m.startswith(NOT_GAUSSIAN)}
    best = max(gauss, key=gauss.get)
    far = summary[DEFAULT].get("far", {}).get("mean")
    return {"default": auroc[DEFAULT], "best": gauss[best], "best_name": best,
            "cosine": auroc.get(COSINE), "far": None if far is None else 100 * far,
            "views": data["config"].get("views")}


def cell(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def main() -> None:
    rows = []
    for path in sorted(ARMS.glob("fashion-open-*.json")):
        name = path.stem.removeprefix("fashion-open-")
        b = bench(path)
        arm = name[: -len(b["views"]) - 1] if b["views"] and name.endswith(b["views"]) else name
        base, seed = split_arm(arm)
        rows.append((base != "base", base, seed, b["views"] or "", arm, b))
    lines = [
        "# Fashion-MNIST open set: recipe arms",
        "",
        "Encoder: the small convnet on Fashion-MNIST train classes 0-5 (T-shirt, trouser, "
        "pullover, dress, coat, sandal), 12 epochs (1,680 steps, batch 256, T 0.2), one "
        "torch thread; each arm changes one thing (`benchmarks/fashion_arms.sh <arm>`). "
        "Open set: ID = Fashion-MNIST test classes 0-5, OOD = classes 6-9 (shirt, sneaker, "
        "bag, ankle boot); AUROC (%) mean over the bench's 3 seeds (scorers fitted on the "
        "36,000 train images of classes 0-5; bench std <= 0.2). k-NN: weighted k-NN top-1, "
        "full protocol (36,000 / 6,000). Proxy: the OOD-proxy monitor's mean AUROC at the "
        "last epoch (noise, pixel-permuted, jigsaw and, without rotation training, rotated "
        "ID images; no OOD data). Minutes: optimiser steps on one thread of a shared "
        "2-core machine. FAR: the default detector's false alarms at alpha 5% (%).",
        "",
        "| arm | what | encoder seed | test-time views | 6-class k-NN (%) | proxy mean (%) "
        "| training min | open-set AUROC, default | best Gaussian-family row | cosine k-NN "
        "| FAR (%) | bench |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, base, seed, views, arm, b in sorted(rows, key=lambda r: r[:4]):
        t = training(arm) or {}
        knn = None if t.get("knn") is None else 100 * t["knn"]
        proxy = None if t.get("proxy") is None else 100 * t["proxy"]
        lines.append(
            f"| {base} | {WHAT.get(base, '')} | {seed} | {views or 'none'} | {cell(knn)} "
            f"| {cell(proxy, '{:.1f}')} | {cell(t.get('minutes'), '{:.1f}')} "
            f"| {b['default']:.2f} | {b['best']:.2f} ({b['best_name']}) | {cell(b['cosine'])} "
            f"| {cell(b['far'])} | fashion-open-{arm}{'-' + views if views else ''}.json |")
    lines += ["", "Written by `python benchmarks/fashion_arms.py` from the JSON files beside it."]
    out = ARMS / "fashion_arms.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
