"""gaussood.deep.evaluate: one call from encoder and data to a report (small synthetic data)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gaussood.deep as deep  # noqa: E402
from gaussood import GaussianScorer, NormShellScorer  # noqa: E402
from gaussood.deep import Encoder, OODSet, evaluate, save_encoder  # noqa: E402


def test_embeddings_in_report_out():
    rng = np.random.default_rng(0)
    fit, test = rng.normal(size=(600, 8)), rng.normal(size=(300, 8))
    ood = {"shifted": OODSet(rng.normal(size=(300, 8)) + 1.5, "near", "shifted Gaussian"),
           "wide": 3.0 * rng.normal(size=(300, 8))}
    scorers = {"Gaussian": GaussianScorer(alpha=0.1), "shell": (NormShellScorer(alpha=0.1), False)}
    result = evaluate(None, fit, test, ood, scorers=scorers, seeds=[0, 1], n_fit=500,
                      n_eval=200, alpha=0.1, name="synthetic", progress=False)
    assert result is not None and deep.evaluate is evaluate
    auroc = result.summary["Gaussian"]["sets"]["shifted"]["auroc"]
    assert auroc["mean"] > 0.9 and len(auroc["values"]) == 2
    assert abs(result.summary["Gaussian"]["far"]["mean"] - 0.1) < 0.06
    assert result.data["kinds"] == {"shifted": "near", "wide": "far"}
    assert result.data["n_fit"] == 500 and result.data["n_eval_ood"]["wide"] == 200
    loaded = json.loads(result.to_json())
    assert loaded["summary"]["shell"]["sets"]["wide"]["auroc"]["mean"] == \
        result.summary["shell"]["sets"]["wide"]["auroc"]["mean"]
    assert set(result.to_dict()) == {"data", "per_seed", "summary"}
    md = result.to_markdown()
    assert md.startswith("### Setting `synthetic`: AUROC (%), mean ± std over seeds [0, 1]")
    assert "| shifted Gaussian |" in md and "| Gaussian |" in md and "Methods:" in md
    # the same seed gives the same numbers
    again = evaluate(None, fit, test, ood, scorers=scorers, seeds=[0, 1], n_fit=500,
                     n_eval=200, alpha=0.1, name="synthetic", progress=False)
    assert again.summary["Gaussian"]["sets"] == result.summary["Gaussian"]["sets"]


def test_images_through_an_encoder_file_and_skipped_sets(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "enc.pt"
    save_encoder(Encoder("small"), path)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 128, size=(160, 32, 32, 3), dtype=np.uint8)
    noise = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)

    def missing():
        raise FileNotFoundError("SVHN not found; searched: nowhere")

    result = evaluate(path, images[:100], images[100:], {
        "noise": noise, "svhn": OODSet(missing, label="SVHN test")},
        scorers={"Gaussian": GaussianScorer()}, seeds=[3], progress=False)
    assert result.data["skipped"] == {"svhn": "SVHN not found; searched: nowhere"}
    assert list(result.data["kinds"]) == ["noise"]
    md = result.to_markdown()
    assert "- SVHN test: not run (SVHN not found" in md and "over seeds [3]" in md
    json.loads(result.to_json())
    with pytest.raises(FileNotFoundError, match="encoder file not found"):
        evaluate(tmp_path / "none.pt", images[:100], images[100:], {"noise": noise},
                 progress=False)
