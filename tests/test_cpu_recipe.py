"""benchmarks/cpu_recipe.py without training: the end-phase arms' configs, and the report
rendered from small synthetic records (old arms without the OOD-proxy monitor, new ones
with it, full-budget records present, absent, or only in checkpoints/)."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from gaussood.deep import TrainConfig  # noqa: E402
from gaussood.deep.monitor import PROXIES  # noqa: E402
from gaussood.deep.train import parse_resolution  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cpu_recipe
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return cpu_recipe


# The fields that fix how many views an arm sees (2 x epochs x steps/epoch x batch, plus
# small crops), and the recipe the end-phase arms must share with the best arm.
SAME_VIEWS = ("epochs", "batch_size", "steps_per_epoch", "steps", "budget_minutes", "small_crops")
SAME_RECIPE = ("model", "temperature", "lr", "norm_weight", "entropy_weight", "rotation",
               "objective", "crop_min_scale", "proj_dim")


def test_end_phase_arms(recipe):
    best = recipe.arm_config("small-prog-t02", 2)
    expected = {"end16": [(16, 1.0)], "end24": [(16, 0.75), (24, 1.0)],
                "end32-16": [(16, 0.65), (32, 0.9), (16, 1.0)]}
    assert set(recipe.END_ARMS) == {n + s for n in expected for s in ("", "-s1")}
    assert recipe.END_PHASES["end32"][2:] == ("small-prog-t02", "small-prog-t02-s1")
    for name, phases in expected.items():
        for arm, seed in ((name, 0), (name + "-s1", 1)):
            cfg = recipe.arm_config(arm, 2)
            assert [(side, round(end, 9)) for side, end in
                    parse_resolution(cfg.resolution)] == phases
            assert cfg.seed == seed and cfg.proxy_monitor and cfg.knn_every == 1
            for f in SAME_VIEWS + SAME_RECIPE:
                assert getattr(cfg, f) == getattr(best, f), (arm, f)
            # only the resolution and the seed differ from the best arm
            diff = {f.name for f in dataclasses.fields(TrainConfig)
                    if getattr(cfg, f.name) != getattr(best, f.name)}
            assert diff <= {"resolution", "seed"} and "resolution" in diff
    # the 32 px ending is the best arm itself, not a second copy of it
    assert not [a for a in recipe.END_ARMS
                if recipe.ARMS[a][0]["resolution"] == recipe.PROGRESSIVE]


def _arm_record(recipe, name, knn, proxy, views=199_680, wall=300.0):
    history = []
    for epoch, k in enumerate(knn, 1):
        row = {"epoch": epoch, "views": views * epoch // len(knn), "knn_top1": k,
               "elapsed": 120.0 * epoch}
        if proxy is not None:  # records from before the monitor have no such key at all
            row["proxy_auroc"] = proxy if epoch == len(knn) else {"mean": 0.5}
        history.append(row)
    return {"arm": name, "tests": recipe.ARMS[name][1],
            "config": dataclasses.asdict(recipe.arm_config(name, 2)), "history": history,
            "wall_seconds_this_call": wall}


def _table(md: str, first: str) -> dict:
    """The markdown table whose header starts with the cell ``first``: first cell of a row
    -> {column: cell}."""
    rows, tables = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            tables.append(rows)
            rows = []
    header, _, *body = next(t for t in tables if t[0][0] == first)
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def test_report_with_and_without_proxy(recipe, tmp_path, monkeypatch):
    out, results, checkpoints = tmp_path / "arms", tmp_path / "results", tmp_path / "checkpoints"
    for d in (out, results, checkpoints):
        d.mkdir()
    monkeypatch.setattr(recipe, "OUT", out)
    monkeypatch.setattr(recipe, "RESULTS", results)
    monkeypatch.setattr(recipe, "CHECKPOINTS", checkpoints)
    proxy = {"noise": 0.9, "permuted": 0.8, "jigsaw": 0.7, "rotated": 0.6, "mean": 0.75}
    records = {"small-prog-t02": _arm_record(recipe, "small-prog-t02", [0.40, 0.47], None),
               "end16": _arm_record(recipe, "end16", [0.41, 0.45], proxy, wall=330.0),
               "end16-s1": _arm_record(recipe, "end16-s1", [0.42, 0.44], proxy)}
    for name, rec in records.items():
        (out / f"{name}.json").write_text(json.dumps(rec))
    rates = {16: 1000.0, 24: 500.0, 32: 250.0}
    (out / "throughput.json").write_text(json.dumps({"steps": 1, "rows": [
        {"model": "small", "side": s, "threads": 1, "views_per_s": v, "forward_mflop": 1.0}
        for s, v in rates.items()]}))
    prov = {"total_steps": 100, "views": 51_200, "knn_top1": 0.6937, "knn_top1_monitor": 0.6455,
            "train_seconds": 600.0}
    (results / "cifar10-cpu.json").write_text(json.dumps({
        "provenance": prov, "history": [{"knn_top1": 0.6455}],
        "full_protocol": {"knn_top1": 0.6937, "bank": 50000, "queries": 10000}}))
    (results / "cifar10-cpu-c0to5.json").write_text(json.dumps({
        "provenance": prov, "history": [{"proxy_auroc": {"noise": 0.99, "permuted": 0.98,
                                                         "jigsaw": 0.85, "mean": 0.94}}]}))
    (checkpoints / "cifar10-cpu-c0to5-rot.json").write_text(json.dumps(
        {**prov, "knn_top1": 0.70, "train_seconds": 1200.0}))  # provenance only
    (results / "fashion_arms").mkdir()  # benchmarks/fashion_arms.sh writes its records there
    (results / "fashion_arms" / "fashion-mnist-cpu-c0to5-rotneg.json").write_text(json.dumps({
        "provenance": {**prov, "knn_top1": 0.8542}, "history": [],
        "full_protocol": {"knn_top1": 0.8542, "bank": 36000, "queries": 6000}}))

    recipe.report()
    md = (results / "cpu_recipe.md").read_text()
    data = json.loads((results / "cpu_recipe.json").read_text())
    arms = _table(md, "arm")
    header = list(arms["end16"])
    old, new = arms["small-prog-t02"], arms["end16"]
    assert header[6:7 + len(PROXIES)] == ["proxy AUROC mean (%)", *PROXIES]
    assert old["final k-NN (%)"] == "47.00" and old["seed"] == "0"
    assert [old[k] for k in ("proxy AUROC mean (%)", *PROXIES)] == ["-"] * (1 + len(PROXIES))
    assert [new[k] for k in ("proxy AUROC mean (%)", *PROXIES)] == [
        "75.0", "90.0", "80.0", "70.0", "60.0"]
    assert new["wall min"] == "5.5" and new["measured min"] == "4.0"
    assert new["idle-core min"] == f"{199_680 / rates[16] / 60:.1f}"
    assert arms["end16-s1"]["seed"] == "1"

    end = _table(md, "end phase")
    assert end["end16"]["final k-NN, seed 0 / 1 (%)"] == "45.00 / 44.00"
    assert end["end16"]["mean k-NN (%)"] == "44.50"
    assert end["end16"]["proxy AUROC mean, seed 0 / 1 (%)"] == "75.0 / 75.0"
    assert end["end24"]["final k-NN, seed 0 / 1 (%)"] == "not run / not run"
    # not run yet, but its idle-core minutes follow from the throughput table
    assert end["end24"]["idle-core min (one arm)"] == \
        f"{0.75 * 199_680 / rates[16] / 60 + 0.25 * 199_680 / rates[24] / 60:.1f}"
    assert end["end32"]["final k-NN, seed 0 / 1 (%)"] == "47.00 / not run"  # the best arm
    assert end["end32"]["proxy AUROC mean, seed 0 / 1 (%)"] == "- / -"

    full = _table(md, "run")
    assert set(full) == {"cifar10-cpu", "cifar10-cpu-c0to5", "cifar10-cpu-c0to5-rot",
                         "fashion-mnist-cpu-c0to5-rotneg"}
    fashion = full["fashion-mnist-cpu-c0to5-rotneg"]
    assert fashion["record"] == "fashion_arms/fashion-mnist-cpu-c0to5-rotneg.json"
    assert fashion["k-NN full protocol (%)"] == "85.42 (36000 / 6000)"
    assert full["cifar10-cpu-c0to5"]["proxy AUROC mean (per proxy) (%)"] == \
        "94.0 (noise 99.0 / permuted 98.0 / jigsaw 85.0)"
    plain, rot = full["cifar10-cpu"], full["cifar10-cpu-c0to5-rot"]
    assert plain["k-NN full protocol (%)"] == "69.37 (50000 / 10000)"
    assert plain["proxy AUROC mean (per proxy) (%)"] == "-"
    assert plain["training min"] == "10" and plain["record"] == "results/cifar10-cpu.json"
    assert rot["record"] == "checkpoints/cifar10-cpu-c0to5-rot.json"
    assert rot["k-NN full protocol (%)"] == "70.00" and rot["training min"] == "20"
    assert ("Not recorded yet (no results/ or checkpoints/ record): cifar10-cpu-reg, "
            "cifar10-cpu-c0to5-supcon, cifar10-cpu-c0to5-supcon-2x, cifar10-cpu-2x, "
            "fashion-mnist-cpu-c0to5.") in md
    assert data["full_budget"]["cifar10-cpu-reg"] is None
    assert data["full_budget"]["cifar10-cpu-c0to5-supcon"] is None
    assert set(data["arms"]) == set(records)


def test_report_full_run_with_proxy(recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe, "RESULTS", tmp_path)
    monkeypatch.setattr(recipe, "CHECKPOINTS", tmp_path / "none")
    assert recipe.full_run("cifar10-cpu-reg") is None
    proxy = {"noise": 0.99, "permuted": 0.98, "jigsaw": 0.85, "mean": 0.94}
    (tmp_path / "cifar10-cpu-reg.json").write_text(json.dumps({
        "provenance": {"total_steps": 17359, "views": 8_887_808, "knn_top1": 0.7,
                       "knn_top1_monitor": 0.66, "train_seconds": 14_000.0},
        "history": [{"proxy_auroc": {"mean": 0.5}}, {"proxy_auroc": proxy},
                    {"proxy_auroc": None}],
        "full_protocol": {"bank": 50000, "queries": 10000}}))
    row = recipe.full_run("cifar10-cpu-reg")
    assert row["proxy"] == proxy  # the last recorded one, not a later epoch without it
    assert (row["steps"], row["bank"], row["record"]) == (17359, 50000, f"{tmp_path.name}/"
                                                          "cifar10-cpu-reg.json")


def test_bench_cells_read_an_arm_bench(recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe, "BENCH", tmp_path)
    assert recipe.bench_cells("end16") == ["-"] * 4
    auroc = {"fashion-mnist": 0.9, "uniform-noise": 0.8, "gaussian-noise": 0.7}
    summary = {m: {"sets": {k: {"auroc": {"mean": v + 0.01 * i}} for k, v in auroc.items()}}
               for i, m in enumerate(recipe.BENCH_METHODS[:2])}
    (tmp_path / "end16.json").write_text(json.dumps(
        {"settings": {"cifar10": {"summary": summary}}}))
    # a method missing from the bench file (here cosine k-NN) gives "-"
    assert recipe.bench_cells("end16") == ["90.00", "91.00", "-", "80.00"]


def test_end_phase_tables_per_budget(recipe, tmp_path, monkeypatch):
    out, results = tmp_path / "arms", tmp_path / "results"
    out.mkdir()
    results.mkdir()
    monkeypatch.setattr(recipe, "OUT", out)
    monkeypatch.setattr(recipe, "RESULTS", results)
    monkeypatch.setattr(recipe, "CHECKPOINTS", tmp_path / "none")
    assert recipe.run_name("end16", 2) == "end16"
    assert recipe.run_name("end16-s1", 8) == "end16-s1-e8"
    rec = _arm_record(recipe, "end16", [0.50, 0.55], None, views=798_720)
    rec["config"]["epochs"] = 8
    (out / "end16-e8.json").write_text(json.dumps(rec))
    recipe.report()
    md = (results / "cpu_recipe.md").read_text()
    assert "2 epochs per arm:" in md and "8 epochs per arm (0.80 M views):" in md
    assert "| end16 | `16` | end16-e8 / end16-s1-e8 | 55.00 / not run | 55.00 |" in md
    assert "| end16 | `16` | end16 / end16-s1 | not run / not run | - |" in md
