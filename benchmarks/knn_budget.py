"""What training budget the CPU recipe's curve predicts for a k-NN target (issue 10).

Inputs (committed results, nothing is trained here):

* ``results/cpu_recipe.json``: the recipe's two complete 2-epoch runs (arms
  ``small-prog-t02`` and ``small-prog-t02-s1``: small net, resolution 16:0.75,32,
  temperature 0.2, batch 256, cosine schedule to the end of the run);
* ``results/<run>.json`` (default ``cifar10-cpu``): the long run of the same recipe
  (``make train``), its final monitor accuracy, its full-protocol accuracy and its
  training minutes.

Model: the final k-NN accuracy of complete runs (each with its schedule sized to its own
length) grows linearly in log2(epochs) between the two budgets; the fitted line is
extrapolated to the target. Two budgets only, so this is an estimate, not a law: SSL
curves usually flatten, which makes the prediction a lower bound on the budget. The
full-protocol target is converted to the monitor protocol with the gap measured on the
long run's final encoder (full minus monitor).

Run: python benchmarks/knn_budget.py [--run cifar10-cpu] [--target 0.70]
Writes results/knn_budget.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SHORT_ARMS = ("small-prog-t02", "small-prog-t02-s1")
N_TRAIN = 50_000  # CIFAR-10 train images; epochs = views / (2 x N_TRAIN), two views per image


def short_runs() -> list[dict]:
    arms = json.loads((RESULTS / "cpu_recipe.json").read_text())["arms"]
    out = []
    for name in SHORT_ARMS:
        arm = arms[name]
        last = arm["history"][-1]
        out.append({"run": f"cpu_recipe:{name}", "epochs": last["views"] / (2 * N_TRAIN),
                    "knn_monitor": last["knn_top1"], "seed": arm["config"]["seed"]})
    return out


def long_run(name: str) -> dict:
    res = json.loads((RESULTS / f"{name}.json").read_text())
    prov = res["provenance"]
    monitored = [h for h in res["history"] if h.get("knn_top1") is not None]
    return {"run": name, "epochs": prov["views"] / (2 * prov["data"]["n_train"]),
            "knn_monitor": monitored[-1]["knn_top1"],
            "knn_full": prov["knn_top1"], "train_minutes": prov["train_seconds"] / 60,
            "total_steps": prov.get("total_steps")}


def predict(short: list[dict], long: dict, target_full: float) -> dict:
    e0 = short[0]["epochs"]
    a0 = sum(r["knn_monitor"] for r in short) / len(short)
    e1, a1 = long["epochs"], long["knn_monitor"]
    slope = (a1 - a0) / math.log2(e1 / e0)               # accuracy per doubling of epochs
    gap = long["knn_full"] - a1
    target_monitor = target_full - gap
    doublings = (target_monitor - a1) / slope
    factor = 2.0 ** doublings
    return {"short_epochs": e0, "short_mean_monitor": a0, "points_per_doubling": slope,
            "full_minus_monitor": gap, "target_full": target_full,
            "target_monitor": target_monitor, "doublings_beyond_long_run": doublings,
            "budget_factor": factor, "predicted_epochs": e1 * factor,
            "predicted_train_hours_at_long_run_rate": long["train_minutes"] * factor / 60}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="cifar10-cpu")
    p.add_argument("--target", type=float, default=0.70, help="full-protocol k-NN target")
    args = p.parse_args(argv)
    short, long = short_runs(), long_run(args.run)
    pred = predict(short, long, args.target)
    out = {"short_runs": short, "long_run": long, "prediction": pred,
           "model": "final k-NN of complete runs linear in log2(epochs), two budgets"}
    (RESULTS / "knn_budget.json").write_text(json.dumps(out, indent=2) + "\n")
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    lines = ["# Budget for the k-NN target (CPU recipe)", "",
             "Complete runs of the same recipe (small net, 16:0.75,32 px, T 0.2, batch 256, "
             "cosine schedule sized to each run); monitor protocol = 10k bank / 2k queries.", "",
             "| run | epochs | k-NN monitor (%) | k-NN full protocol (%) |", "|---|---|---|---|",
             *[f"| {r['run']} (seed {r['seed']}) | {r['epochs']:.2f} | {pct(r['knn_monitor'])} | - |"
               for r in short],
             f"| {long['run']} | {long['epochs']:.2f} | {pct(long['knn_monitor'])} | "
             f"{pct(long['knn_full'])} |", "",
             f"- Gain per doubling of epochs: {100 * pred['points_per_doubling']:.2f} points "
             f"(monitor protocol).",
             f"- Full minus monitor on the long run's encoder: "
             f"{100 * pred['full_minus_monitor']:+.2f} points, so {pct(args.target)}% full "
             f"is {pct(pred['target_monitor'])}% monitor.",
             f"- Predicted: {pred['doublings_beyond_long_run']:.2f} more doublings = "
             f"{pred['budget_factor']:.1f}x the long run = {pred['predicted_epochs']:.0f} epochs, "
             f"about {pred['predicted_train_hours_at_long_run_rate']:.1f} training hours at the "
             f"long run's own rate ({long['train_minutes']:.0f} min for {long['epochs']:.1f} "
             "epochs, one thread, shared machine).",
             "- Caveat: a straight line through two budgets; SSL accuracy usually flattens in "
             "log(epochs), so read this as the least budget the curve allows, not a promise.",
             ""]
    (RESULTS / "knn_budget.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
