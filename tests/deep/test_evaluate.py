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


def test_peers_are_ordinary_detectors_and_may_fail():
    """``peers``: objects with fit / score_samples run after the scorers on the same rows;
    one that fails is reported as failed; the scorers' numbers are those of the core."""
    from sklearn.covariance import EllipticEnvelope

    from gaussood import evaluate_embeddings

    class Failing:
        def fit(self, X, y=None):
            raise RuntimeError("peer library missing")

    rng = np.random.default_rng(2)
    fit, test, far = rng.normal(size=(400, 5)), rng.normal(size=(200, 5)), \
        3 * rng.normal(size=(200, 5))
    scorers = {"Gaussian": GaussianScorer()}
    result = evaluate(None, fit, test, {"far": far}, scorers=scorers, seeds=[1], progress=False,
                      peers={"EE": EllipticEnvelope(random_state=0), "failing": Failing()})
    assert list(result.summary) == ["Gaussian", "EE", "failing"]
    assert result.summary["failing"]["error"] == "RuntimeError: peer library missing"
    assert result.summary["EE"]["sets"]["far"]["auroc"]["mean"] > 0.9
    core = evaluate_embeddings(scorers, fit, None, test, {"far": far}, seeds=[1])
    assert core.per_seed[0]["Gaussian"]["metrics"] == result.per_seed[0]["Gaussian"]["metrics"]
