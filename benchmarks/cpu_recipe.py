"""CPU recipe study: which InfoNCE recipe buys the most k-NN accuracy per CPU minute?

Every arm is one ``train_encoder`` run on the CIFAR-10 JPEG train split with the same
number of views (``--epochs`` x 2 x 49,920 global views), one torch thread, a cosine
schedule sized to the arm, and the weighted k-NN monitor (k = 200, T = 0.1, backbone
features at 32 px; bank 10,000 train images, 2,000 test queries) after every epoch.
Arms differ from the ``base`` arm in one setting each: backbone (small convnet,
ResNet-8, ResNet-20, airbench-style), progressive resolution (16 px for 75% of the
steps, then 32 px) against 32 px throughout, multi-crop (two extra 16 px crops),
temperature, batch size. The end-phase arms (issue 20 item 3) keep the best arm's recipe
(small convnet, temperature 0.2) and change only how training ends: at 16 px (``end16``),
at 24 px (``end24``), at 32 px (``small-prog-t02`` itself, ``end32`` in the report), or a
short 16 px phase after the 32 px one (``end32-16``); each has a seed-1 twin. Every arm
also records the OOD-proxy monitor (``TrainConfig.proxy_monitor``, gaussood.deep.monitor)
after each epoch. ``--jobs 2`` runs two arms at a time (one per core, each its own
process); nothing else should run meanwhile, since minutes are part of the result.
``--throughput`` measures views/s per backbone and crop side with 1 and 2 threads
(timed steps, nothing else running), which turns views into idle-core minutes.

    python benchmarks/cpu_recipe.py --arms all --jobs 2      # every arm (~70 min, 2 cores)
    python benchmarks/cpu_recipe.py --throughput             # views/s table (~3 min)
    python benchmarks/cpu_recipe.py --report                 # results/cpu_recipe.{md,json}
    python benchmarks/cpu_recipe.py --arms end16,end24,end32-16 --jobs 1   # end phase

Each arm writes ``results/cpu_recipe/<arm>.json`` (history, config, environment) and
checkpoints under ``~/.cache/gaussood/runs/recipe-<arm>`` (an interrupted study resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import environment, write_results  # noqa: E402

OUT = HERE / "results" / "cpu_recipe"
RESULTS = HERE / "results"          # full-budget training records: <name>.json ...
CHECKPOINTS = HERE / "checkpoints"  # ... or, without the results file, checkpoints/<name>.json
PROGRESSIVE = "16:0.75,32"

# name -> (changes from the base TrainConfig, what the arm tests)
ARMS = {
    "small-32": ({"model": "small", "resolution": "32"}, "baseline: today's net, 32 px"),
    "small-prog": ({"model": "small", "resolution": PROGRESSIVE}, "progressive resolution"),
    "resnet8-prog": ({"model": "resnet8", "resolution": PROGRESSIVE}, "backbone: ResNet-8"),
    "resnet20-prog": ({"model": "resnet20", "resolution": PROGRESSIVE}, "backbone: ResNet-20"),
    "airbench-prog": ({"model": "airbench", "resolution": PROGRESSIVE}, "backbone: airbench"),
    "small-prog-mc2": ({"model": "small", "resolution": PROGRESSIVE, "small_crops": 2},
                       "multi-crop: + two half-side crops"),
    "small-prog-t02": ({"model": "small", "resolution": PROGRESSIVE, "temperature": 0.2},
                       "temperature 0.2"),
    "small-prog-b512": ({"model": "small", "resolution": PROGRESSIVE, "batch_size": 512},
                        "batch 512 (lr scaled)"),
    "small-32-s1": ({"model": "small", "resolution": "32", "seed": 1}, "baseline, seed 1"),
    "small-prog-t02-s1": ({"model": "small", "resolution": PROGRESSIVE, "temperature": 0.2,
                           "seed": 1}, "best arm (temperature 0.2), seed 1"),
}

# End of training (issue 20 item 3), on the best arm's recipe at equal views: phase label
# -> (resolution, what it tests, arm of seed 0, arm of seed 1). Ending at 32 px is the
# best arm itself; the others are new arms named after the label (and "-s1").
END_PHASES = {
    "end16": ("16", "end phase: 16 px throughout", "end16", "end16-s1"),
    "end24": ("16:0.75,24", "end phase: 24 px after 16 px", "end24", "end24-s1"),
    "end32": (PROGRESSIVE, "end phase: 32 px (the best arm)", "small-prog-t02",
              "small-prog-t02-s1"),
    "end32-16": ("16:0.65,32:0.25,16", "end phase: a short 16 px phase after 32 px",
                 "end32-16", "end32-16-s1"),
}
BEST = {"model": "small", "temperature": 0.2}  # the best arm's recipe, less its resolution
END_ARMS = {arm: ({**BEST, "resolution": res, "seed": seed}, tests + (", seed 1" if seed else ""))
            for res, tests, *arms in END_PHASES.values()
            for arm, seed in zip(arms, (0, 1)) if arm not in ARMS}  # the new arms
ARMS.update(END_ARMS)

# Full-budget runs of the shipped recipe (benchmarks/train_encoder.py records): name -> what
FULL_RUNS = {
    "cifar10-cpu": "best recipe, 240-min budget (17,359 steps), all classes",
    "cifar10-cpu-reg": "the same steps + the paper's regulariser (norm 0.005, entropy 0.01)",
    "cifar10-cpu-c0to5": "open-set (InfoNCE): classes 0-5, 8,680 steps",
    "cifar10-cpu-c0to5-supcon": "open-set: classes 0-5, SupCon on their labels, 4,340 steps",
    "cifar10-cpu-c0to5-supcon-2x": "shipped open-set: the same SupCon at 8,680 steps",
    "cifar10-cpu-c0to5-rot": "open-set + rotation-prediction head",
    "cifar10-cpu-2x": "shipped: the same recipe at twice its steps (34,718)",
    "fashion-mnist-cpu-c0to5": "Fashion-MNIST open set (InfoNCE): classes 0-5, 12 epochs",
    "fashion-mnist-cpu-c0to5-rotneg": "shipped Fashion-MNIST open set: the same + rotations as "
                                      "shifted negatives (more arms: results/fashion_arms/)",
}


def arm_config(name: str, epochs: int):
    from gaussood.deep import TrainConfig

    changes, _ = ARMS[name]
    return dataclasses.replace(TrainConfig(), epochs=epochs, knn_every=1, **changes)


STUDY_EPOCHS = 2   # the study's budget; an arm run at another budget is named <arm>-e<epochs>


def run_name(name: str, epochs: int) -> str:
    """Name of an arm's record, log and checkpoint folder at ``epochs``."""
    return name if epochs == STUDY_EPOCHS else f"{name}-e{epochs}"


def run_arm(name: str, epochs: int, root: str | None) -> None:
    import torch

    from gaussood.deep import load_dataset, train_encoder

    torch.set_num_threads(1)
    config = arm_config(name, epochs)
    train = load_dataset("cifar10", "train", root=root)
    test = load_dataset("cifar10", "test", root=root)
    start = time.perf_counter()
    result = train_encoder(train, config, eval_set=test, device="cpu",
                           checkpoint_dir=Path.home() / ".cache/gaussood/runs"
                           / f"recipe-{run_name(name, epochs)}")
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"arm": name, "tests": ARMS[name][1], "config": dataclasses.asdict(config),
              "history": result.history, "wall_seconds_this_call": time.perf_counter() - start,
              "data": {"train": train.source, "test": test.source},
              "environment": environment()}
    (OUT / f"{run_name(name, epochs)}.json").write_text(json.dumps(record, indent=2) + "\n")


def throughput(models, sizes, threads, steps: int) -> list[dict]:
    """views/s of one training step per (model, side, threads), timed by the trainer's probe."""
    import torch

    from gaussood.deep import TrainConfig
    from gaussood.deep.loss import InfoNCELoss
    from gaussood.deep.models import Encoder, model_flops
    from gaussood.deep.train import _seconds_per_step, _Step

    rows = []
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8)
    for model_name in models:
        for t in threads:
            torch.set_num_threads(t)
            config = TrainConfig(model=model_name, resolution=",".join(
                f"{s}:{1 / (len(sizes) + 1):.3f}" for s in sizes) + ",32")
            model = Encoder(model_name).to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            probe = _Step(config, model, opt, None, InfoNCELoss(0.5), None, torch.device("cpu"))
            sec = _seconds_per_step(probe, images, sizes, config.batch_size,
                                    torch.device("cpu"), repeats=steps)
            for size in sizes:
                rows.append({"model": model_name, "side": size, "threads": t,
                             "views_per_s": 2 * config.batch_size / sec[size],
                             "forward_mflop": model_flops(model_name, size) / 1e6})
                print(rows[-1], flush=True)
    return rows


def idle_minutes(cfg: dict, views: float, tp: dict | None) -> float | None:
    """Training minutes of ``views`` on an idle core under the TrainConfig fields ``cfg``:
    each phase's views over its measured views/s (None without a throughput row)."""
    from gaussood.deep.train import parse_resolution

    if tp is None or cfg["small_crops"] or cfg["batch_size"] != 256:
        return None
    rate = {(r["model"], r["side"]): r["views_per_s"] for r in tp["rows"] if r["threads"] == 1}
    begin, minutes = 0.0, 0.0
    for side, end in parse_resolution(cfg["resolution"]):
        if (cfg["model"], side) not in rate:
            return None
        minutes, begin = minutes + (end - begin) * views / rate[cfg["model"], side] / 60, end
    return minutes


def _pct(x, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def final_proxy(history: list) -> dict:
    """The last OOD-proxy AUROCs of a training history (name -> AUROC, and "mean"); empty
    for histories written before the monitor existed, or with it off."""
    return next((h["proxy_auroc"] for h in reversed(history) if h.get("proxy_auroc")), {})


def full_run(name: str) -> dict | None:
    """One full-budget run's row from its training record: ``RESULTS/<name>.json`` or
    ``RESULTS/fashion_arms/<name>.json`` (provenance, history, full protocol), else
    ``CHECKPOINTS/<name>.json`` (provenance only); None when none exists (the run has
    not finished)."""
    for path in (RESULTS / f"{name}.json", RESULTS / "fashion_arms" / f"{name}.json",
                 CHECKPOINTS / f"{name}.json"):
        if path.is_file():
            rec = json.loads(path.read_text())
            prov = rec.get("provenance", rec)
            full = rec.get("full_protocol", {})
            return {"record": f"{path.parent.name}/{path.name}", "steps": prov["total_steps"],
                    "views": prov.get("views"), "knn_full": prov.get("knn_top1"),
                    "bank": full.get("bank"), "queries": full.get("queries"),
                    "knn_monitor": prov.get("knn_top1_monitor"),
                    "proxy": final_proxy(rec.get("history", [])),
                    "train_minutes": prov["train_seconds"] / 60}
    return None


BENCH = OUT / "bench"   # cifar10_ood.py on an arm's encoder: bench/<arm>.json
BENCH_METHODS = ("Gaussian views: raw + L2 + relative L2 (Fisher; default)",
                 "Gaussian (class-conditional, L2)", "kNN (k=50, cosine)")


def bench_cells(arm: str) -> list[str]:
    """[Fashion-MNIST AUROC of BENCH_METHODS..., far-OOD mean of the default] (%), from
    ``cifar10_ood.py --settings cifar10 --encoder <the arm's last.pt>``; '-' when not run."""
    path = BENCH / f"{arm}.json"
    if not path.is_file():
        return ["-"] * (len(BENCH_METHODS) + 1)
    summary = json.loads(path.read_text())["settings"]["cifar10"]["summary"]
    cells = [_pct(summary[m]["sets"]["fashion-mnist"]["auroc"]["mean"]) if m in summary
             else "-" for m in BENCH_METHODS]
    sets = summary[BENCH_METHODS[0]]["sets"]
    return cells + [_pct(sum(v["auroc"]["mean"] for v in sets.values()) / len(sets))]


def end_phase_lines(arms: dict, tp: dict | None) -> list[str]:
    """The end-of-training tables: one per budget (the study's 2 epochs, and any other
    ``--epochs`` the end-phase arms ran at, records ``<arm>-e<epochs>``)."""
    budgets = {STUDY_EPOCHS} | {rec["config"]["epochs"] for name, rec in arms.items()
                                for *_, a0, a1 in END_PHASES.values()
                                for a in (a0, a1) if name.startswith(f"{a}-e")}
    lines = ["", "End of training (issue 20 item 3): the best arm's recipe (small convnet, "
             "temperature 0.2), only the crop side at the end differs, equal views within a "
             f"table. 'not run' until `--arms {','.join(END_ARMS)}` has run (add `--epochs "
             "E` for another budget); idle-core min from the throughput table, also for "
             "arms not run yet.", "",
             "Bench columns: `python benchmarks/cifar10_ood.py --settings cifar10 --encoder "
             "~/.cache/gaussood/runs/recipe-<arm>/last.pt --name <arm> --results-dir "
             "benchmarks/results/cpu_recipe/bench` on the seed-0 arm (AUROC %, mean of the "
             "bench's 3 seeds; short runs, so far below the shipped encoder)."]
    for epochs in sorted(budgets):
        runs = {label: [run_name(n, epochs) for n in names]
                for label, (_, _, *names) in END_PHASES.items()}
        ref = next((arms[n] for names in runs.values() for n in names if n in arms), None)
        if ref is None and epochs != STUDY_EPOCHS:
            continue
        views = None if ref is None else ref["history"][-1]["views"]
        lines += ["", f"{epochs} epochs per arm"
                  + ("" if views is None else f" ({views / 1e6:.2f} M views)") + ":", "",
                  "| end phase | resolution | arms | final k-NN, seed 0 / 1 (%) | mean k-NN "
                  "(%) | proxy AUROC mean, seed 0 / 1 (%) | idle-core min (one arm) | "
                  "Fashion-MNIST: default | Fashion-MNIST: class-cond. L2 | Fashion-MNIST: "
                  "cosine kNN | far mean: default |", "|---" * 11 + "|"]
        for label, (res, _, *names) in END_PHASES.items():
            recs = [arms.get(n) for n in runs[label]]
            knn = [r["history"][-1]["knn_top1"] if r else None for r in recs]
            done = [k for k in knn if k is not None]
            idle = None if views is None else idle_minutes(
                dataclasses.asdict(arm_config(names[0], epochs)), views, tp)
            lines.append(
                f"| {label} | `{res}` | {' / '.join(runs[label])} | "
                + " / ".join("not run" if r is None else _pct(k) for r, k in zip(recs, knn))
                + f" | {_pct(sum(done) / len(done)) if done else '-'} | "
                + " / ".join("-" if r is None else _pct(final_proxy(r["history"]).get("mean"), 1)
                             for r in recs)
                + f" | {'-' if idle is None else f'{idle:.1f}'} | "
                + " | ".join(bench_cells(runs[label][0])) + " |")
    return lines


def report() -> None:
    from gaussood.deep.monitor import PROXIES

    arms = {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))
            if p.stem != "throughput"}
    tp_path = OUT / "throughput.json"
    tp = json.loads(tp_path.read_text()) if tp_path.is_file() else None
    lines = ["CPU recipe study: InfoNCE on the CIFAR-10 JPEG train split, one torch thread per "
             "arm, the same number of views per arm (2 epochs, 0.2 M global views). Weighted "
             "k-NN top-1 (k=200, T=0.1) on backbone features at 32 px, bank 10,000 train / "
             "2,000 test images: with 2,000 queries one accuracy has a binomial standard error "
             "of about 1.1 points, so differences under ~2 points are noise (the two seeds of "
             "an arm show the seed-to-seed spread). OOD-proxy AUROC (%, final epoch; "
             "gaussood.deep.monitor): the 2,000 held-out test images against proxies made from "
             "them alone (Gaussian noise, pixel-permuted, 4x4 jigsaw, rotated), one Gaussian "
             "fitted on the L2 backbone features of the 10,000-image bank; no OOD dataset is "
             "involved. '-': arm run before the monitor existed. 'measured min' is training "
             "time in the arm, 'wall min' the whole training call (monitors and checkpoints "
             "included); both shared the 2 cores with another arm and with other work (not "
             "comparable across arms); 'idle-core min' converts the views with the throughput "
             "table below (one thread, batch 256; '-' where it has no row: multi-crop, "
             "batch 512).", "",
             "| arm | tests | seed | views (M) | k-NN per epoch (%) | final k-NN (%) | "
             "proxy AUROC mean (%) | " + " | ".join(PROXIES) + " | measured min | wall min | "
             "idle-core min |", "|---" * (10 + len(PROXIES)) + "|"]
    for name, rec in arms.items():
        h = rec["history"]
        curve = " / ".join(f"{100 * r['knn_top1']:.2f}" for r in h if r["knn_top1"] is not None)
        proxy = final_proxy(h)
        idle = idle_minutes(rec["config"], h[-1]["views"], tp)
        wall = rec.get("wall_seconds_this_call")
        lines.append(f"| {name} | {rec['tests']} | {rec['config']['seed']} | "
                     f"{h[-1]['views'] / 1e6:.2f} | {curve} | {_pct(h[-1]['knn_top1'])} | "
                     + " | ".join(_pct(proxy.get(k), 1) for k in ("mean", *PROXIES))
                     + f" | {h[-1]['elapsed'] / 60:.1f} | "
                     f"{'-' if wall is None else f'{wall / 60:.1f}'} | "
                     f"{'-' if idle is None else f'{idle:.1f}'} |")
    lines += end_phase_lines(arms, tp)
    full = {name: full_run(name) for name in FULL_RUNS}
    lines += ["", "Full-budget runs (benchmarks/train_encoder.py; one thread, shared 2-core "
              "machine): k-NN full protocol = every train image in the bank, every test image "
              "queried (bank / queries in parentheses); monitor = 10,000 / 2,000 as above, "
              "final epoch; proxy AUROC as above, final epoch, from the run's history ('-': "
              "trained before the monitor existed; rotation-trained runs have no rotated "
              "proxy). Training min = optimiser steps only, summed over resumed sessions.", "",
              "| run | what | steps | views (M) | k-NN full protocol (%) | final monitor k-NN (%) "
              "| proxy AUROC mean (per proxy) (%) | training min | record |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, row in full.items():
        if row is None:
            continue
        per = " / ".join(f"{k} {_pct(v, 1)}" for k, v in row["proxy"].items() if k != "mean")
        proxy = "-" if not row["proxy"] else f"{_pct(row['proxy'].get('mean'), 1)} ({per})"
        size = "" if row["bank"] is None else f" ({row['bank']} / {row['queries']})"
        views = "-" if row["views"] is None else f"{row['views'] / 1e6:.2f}"
        lines.append(f"| {name} | {FULL_RUNS[name]} | {row['steps']} | {views} | "
                     f"{_pct(row['knn_full'])}{size} | {_pct(row['knn_monitor'])} | {proxy} | "
                     f"{row['train_minutes']:.0f} | {row['record']} |")
    missing = [name for name, row in full.items() if row is None]
    if missing:
        lines += ["", "Not recorded yet (no results/ or checkpoints/ record): "
                  + ", ".join(missing) + "."]
    if tp:
        lines += ["", f"Throughput ({tp['steps']} timed steps of batch 256 per cell after one "
                  "untimed step; views/s of a whole training step; forward MFLOP per image at "
                  f"that side). Load average (1, 5, 15 min) before / after: "
                  f"{tp.get('load_average_before')} / {tp.get('load_average_after')} on 2 cores "
                  f"(above ~1 means other processes competed). {tp.get('note', '')}", "",
                  "| model | side | MFLOP | 1 thread | 2 threads |", "|---|---|---|---|---|"]
        cells = {(r["model"], r["side"], r["threads"]): r for r in tp["rows"]}
        for (m, s, t), r in cells.items():
            if t == 1:
                two = cells.get((m, s, 2))
                two = "-" if two is None else f"{two['views_per_s']:.0f}"
                lines.append(f"| {m} | {s} | {r['forward_mflop']:.0f} | "
                             f"{r['views_per_s']:.0f} | {two} |")
    write_results("cpu_recipe", {"arms": arms, "throughput": tp, "full_budget": full,
                                 "environment": environment()},
                  "\n".join(lines), RESULTS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=None, help=f"comma list or 'all' ({', '.join(ARMS)})")
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # one arm, in-process
    parser.add_argument("--epochs", type=int, default=STUDY_EPOCHS,
                        help=f"views per arm in epochs (records of a budget other than "
                        f"{STUDY_EPOCHS} are named <arm>-e<epochs>)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", default=None, help="data root with the CIFAR-10 archive")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per throughput cell")
    parser.add_argument("--note", default="", help="a line on the conditions of the throughput run")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    if args.arm:
        return run_arm(args.arm, args.epochs, args.root)
    if args.throughput:
        models = ["small", "resnet8", "resnet20", "airbench"]
        load_before = os.getloadavg()
        rows = throughput(models, [16, 24, 32], [1, 2], args.steps)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "throughput.json").write_text(json.dumps(
            {"steps": args.steps, "rows": rows, "note": args.note,
             "load_average_before": load_before, "load_average_after": os.getloadavg(),
             "environment": environment()}, indent=2) + "\n")
    if args.arms:
        names = list(ARMS) if args.arms == "all" else args.arms.split(",")
        unknown = [n for n in names if n not in ARMS]
        if unknown:
            parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
        cmd = [sys.executable, __file__, "--epochs", str(args.epochs)]
        cmd += ["--root", args.root] if args.root else []
        logs = OUT / "logs"
        logs.mkdir(parents=True, exist_ok=True)

        def one(name):
            with open(logs / f"{run_name(name, args.epochs)}.log", "w") as log:
                return name, subprocess.run(cmd + ["--arm", name], stdout=log,
                                            stderr=subprocess.STDOUT).returncode
        with ThreadPoolExecutor(args.jobs) as pool:
            for name, code in pool.map(one, names):
                print(f"{name}: {'done' if code == 0 else f'failed ({code})'}", flush=True)
    if args.report or args.arms or args.throughput:
        report()


if __name__ == "__main__":
    main()
