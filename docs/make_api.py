"""Write docs/api.md from the numpydoc docstrings of gaussood's public API.

    python docs/make_api.py           # rewrite docs/api.md
    python docs/make_api.py --check   # exit 1 if docs/api.md differs (tests/test_docs.py)

Each entry is the signature, the first paragraph of the docstring and a link to the
source file; the docstrings themselves (``help(obj)``) are the full reference. Public
means: a module's ``__all__`` (public methods of classes included), plus the few names
listed in SECTIONS. Needs the torch extra (``gaussood.deep`` is documented too).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

# (module, names or None for __all__, one-line description, topic page)
SECTIONS = [
    ("gaussood", None, "the numpy core: scorers, filter, persistence, metrics (never imports "
     "torch)", "index.md"),
    ("gaussood._base", ["BaseScorer", "registered_scorers", "scorer_class"],
     "the interface every scorer shares, and the scorer registry (a subclass of "
     "`BaseScorer` registers itself; `gaussood fit --scorer` and `gaussood.load` use it)",
     "contributing.md#adding-a-scorer-one-file-plus-its-test"),
    ("gaussood.metrics", ["OODReport"], "the report type of `ood_report`", "metrics.md"),
    ("gaussood.evaluation", ["Evaluation", "Method", "OODSet", "default_scorers"],
     "the numpy evaluation core: types of `evaluate_embeddings`", "contributing.md"),
    ("gaussood.provenance", ["file_sha256", "state_sha256", "code_sha256", "encoder_identity",
                             "check_identity", "data_fingerprint", "training_record",
                             "read_training_record"],
     "hashes, encoder identity, data fingerprints and the training record",
     "own-model.md#encoder-identity"),
    ("gaussood.diagnostics", ["diagnose", "GaussianityReport", "verdict", "norm_cv",
                              "anderson_pass_share", "dagostino_pass_share",
                              "mahalanobis_beta_ks", "effective_rank"],
     "Gaussianity diagnostics", "theory.md#the-diagnostics-gaussooddiagnosticsdiagnose"),
    ("gaussood.shift", ["test", "test_pvalues", "ShiftResult", "METHODS", "calibration_size",
                        "Reference", "pvalue_law", "wishart_eigenvalues",
                        "hotelling_two_sample", "reference_moments"],
     "batch shift detection with a known false-alarm rate", "shift.md"),
    ("gaussood.dask", None, "fit and score on Dask arrays (needs the dask extra)", "scale.md"),
    ("gaussood.deep", None, "the torch side: datasets, encoders, training, embeddings, "
     "evaluation (needs the torch extra)", "training.md"),
    ("gaussood.deep.models", ["MODELS", "model_flops"], "encoder architectures by name",
     "training.md#training-gaussooddeeptrain_encoder"),
    ("gaussood.deep.data", ["DATASETS"], "datasets by name",
     "training.md#datasets-gaussooddeepload_dataset"),
    ("gaussood.deep.distributed", ["GatheredInfoNCELoss", "all_gather_with_grad", "spawn",
                                   "launched", "is_main_process"],
     "multi-process (DDP) training: the gathered InfoNCE loss, launching ranks",
     "distributed-training.md"),
    ("gaussood.cli", ["main", "build_parser", "COMMANDS"], "the `gaussood` command: one "
     "module of `gaussood.cli.commands` per command, listed in `COMMANDS`", "cli.md"),
    ("gaussood.cli.options", None, "command-line options derived from the library (scorer "
     "parameters, `TrainConfig` fields), for scripts that build their own parser",
     "contributing.md#adding-a-command-line-command-one-module-its-test-and-its-doc"),
]

# topic pages for single names (beyond the section's page)
TOPICS = {
    "GaussianScorer": "scorers/gaussian.md", "NormShellScorer": "scorers/norm_shell.md",
    "KNNScorer": "scorers/knn.md", "PValueCombination": "index.md#which-scorer",
    "OODFilter": "filter.md", "AbstainingClassifier": "filter.md", "FilterResult": "filter.md",
    "save": "persistence.md", "load": "persistence.md", "ood_report": "metrics.md",
    "make_encoder": "own-model.md", "ImageEncoder": "own-model.md",
    "open_images": "own-model.md#images-in", "imagenet_preprocessing": "own-model.md#preprocessing",
    "evaluate": "getting-started.md#reading-the-benchmark-table",
}


def first_paragraph(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    para = doc.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in para.splitlines())


def signature(name: str, obj) -> str:
    target = obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return name
    text = tidy(f"{name}{sig}")
    if len(text) <= 88:
        return text
    params, kinds = [], [p.kind for p in sig.parameters.values()]
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is p.KEYWORD_ONLY and inspect.Parameter.VAR_POSITIONAL not in kinds[:i] \
                and (i == 0 or kinds[i - 1] is not p.KEYWORD_ONLY):
            params.append("*")
        params.append(tidy(str(p)))
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(kinds)
                                            or kinds[i + 1] is not p.POSITIONAL_ONLY):
            params.append("/")
    out, line = [], f"{name}("
    for i, p in enumerate(params):
        piece = p + ("," if i < len(params) - 1 else ")")
        if len(line) + len(piece) + 1 > 88 and line.strip() != f"{name}(":
            out.append(line.rstrip())
            line = " " * 4
        line += piece + " "
    out.append(line.rstrip())
    if sig.return_annotation is not inspect.Signature.empty:
        out[-1] += " -> " + inspect.formatannotation(sig.return_annotation)
    return tidy("\n".join(out))


def tidy(text: str) -> str:
    """No memory addresses in default reprs; string annotations without their quotes."""
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    text = re.sub(r"(: |-> )'([^']*)'", r"\1\2", text)
    return re.sub(r'(: |-> )"([^"]*)"', r"\1\2", text)


def source_link(obj) -> str:
    try:
        path = Path(inspect.getsourcefile(inspect.unwrap(obj))).resolve()
        rel = path.relative_to(ROOT).as_posix()
    except (TypeError, ValueError):
        return ""
    return f"[source](../{rel})"


def public_methods(cls) -> list:
    out = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or re.fullmatch(r"set_\w+_request", name) or not (inspect.isfunction(member) or inspect.ismethod(member)
                                        or isinstance(member, property)):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("gaussood"):
            continue      # scikit-learn's and torch's own methods are theirs to document
        if owner.__name__ == "BaseScorer" and cls is not owner:
            continue      # listed once, under BaseScorer
        if isinstance(member, property):
            out.append((name, f"{name} (property)", member.fget))
        else:
            out.append((name, signature(name, member).replace("(self, ", "(").replace(
                "(self)", "()"), member))
    return out


def entry(module: str, name: str, obj) -> list:
    lines = [f"### `{name}`", ""]
    if isinstance(obj, dict):
        lines += [f"`{module}.{name}`: a dict of {len(obj)} entries, name -> builder: "
                  + ", ".join(f"`{k}`" for k in obj) + ".", ""]
        return lines
    head = signature(name, obj)
    lines += ["```text", head, "```", ""]
    para = first_paragraph(obj)
    link = source_link(obj)
    topic = TOPICS.get(name)
    tail = " ".join(x for x in (link, f"[topic]({topic})" if topic else "") if x)
    lines += [textwrap.fill(f"{para} {tail}".strip(), 92, break_on_hyphens=False,
                           break_long_words=False), ""]
    if inspect.isclass(obj):
        if any(k.__name__ == "BaseScorer" for k in obj.__mro__[1:]):
            lines += ["Plus the scorer interface of [`BaseScorer`](#basescorer).", ""]
        methods = public_methods(obj)
        if methods:
            lines += ["| method | what it does |", "|---|---|"]
            for _, sig, member in methods:
                one = first_paragraph(member).split(". ")[0].rstrip(".").replace("|", "\\|")
                lines.append(f"| `{' '.join(sig.split())}` | {one} |")
            lines.append("")
    return lines


def render() -> str:
    out = ["# API reference", "",
           "<!-- Generated by docs/make_api.py from the docstrings: do not edit by hand. Run "
           "`python docs/make_api.py` after changing a public signature or the first "
           "paragraph of a docstring; tests/test_docs.py checks this file is current. -->",
           "",
           "One entry per public class and function: its signature, the first paragraph of "
           "its docstring and a link to the source. The full numpydoc docstrings "
           "(parameters, returns, raises) are in the source and in `help(obj)`. Topic pages "
           "explain the ideas with examples that run ([index.md](index.md) maps them). "
           "Conventions: `X` is a 2-D array `(n_samples, n_features)` of embeddings; a score "
           "is higher for more in-distribution samples.", "", "## Contents", ""]
    body = []
    for module, names, what, topic in SECTIONS:
        mod = importlib.import_module(module)
        names = names if names is not None else [n for n in mod.__all__ if not n.startswith("__")]
        anchor = re.sub(r"[^\w-]", "", module.replace(" ", "-")).lower()
        out.append(f"- [`{module}`](#{anchor}): {what}")
        body += [f"## {module}", "", f"{what[0].upper()}{what[1:]}. Topic page: "
                 f"[{topic.split('#')[0]}]({topic}).", ""]
        for name in names:
            body += entry(module, name, getattr(mod, name))
    return "\n".join(out + [""] + body).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is not current")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print("docs/api.md is out of date: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
