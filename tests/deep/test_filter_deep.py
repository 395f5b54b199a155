"""OODFilter with a real encoder (the shipped CIFAR-10 checkpoint) on real images:
numpy images, a map-style Dataset (drop and flag) and a DataLoader stream."""

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset

from gaussood import GaussianScorer, OODFilter
from gaussood.deep import load_dataset

REPO = Path(__file__).resolve().parents[2]
ROOT = os.environ.get("GAUSSOOD_DATA") or str(REPO.parent / "shared" / "data")
SHIPPED = REPO / "benchmarks" / "checkpoints" / "cifar10-cpu.pt"


@pytest.fixture(scope="module")
def data():
    try:
        train = load_dataset("cifar10", "train", root=ROOT, n=3000)
        test = load_dataset("cifar10", "test", root=ROOT, n=1000)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 archive not found")
    noise = load_dataset("uniform-noise", n=200, seed=1)
    return train, test, noise


@pytest.fixture(scope="module")
def fitted(data):
    train, _, _ = data
    return OODFilter(GaussianScorer(random_state=0), encoder=SHIPPED, alpha=0.05).fit(train.images)


def test_images_drop_rate_at_alpha(fitted, data):
    _, test, noise = data
    kept, result = fitted.filter(test.images)
    # 1,000 held-out ID images; conformal alpha = 0.05 -> binomial sd 0.7%
    assert 0.02 <= result.flagged_share <= 0.08
    assert kept.shape[1:] == (32, 32, 3)
    assert fitted.evaluate(noise.images).flagged_share > 0.9


def test_dataset_subset_and_flag(fitted, data):
    _, test, noise = data
    images = torch.from_numpy(np.concatenate([test.images[:300], noise.images[:100]]))
    chw = images.permute(0, 3, 1, 2).float() / 255.0        # ToTensor()-style input
    dataset = TensorDataset(chw, torch.arange(400))
    subset = fitted.subset(dataset)
    kept = np.array(subset.indices)
    assert np.mean(kept < 300) > 0.95 and np.sum(kept < 300) >= 270
    assert len(subset) == int(fitted.last_result_.keep.sum())
    flagging = OODFilter.from_fitted(fitted.scorer_, encoder=SHIPPED, action="flag")
    flagged = flagging.subset(dataset)
    x, idx, score, pvalue = flagged[350]
    assert x.shape == (3, 32, 32) and int(idx) == 350 and float(pvalue) <= 0.05
    assert float(score) == pytest.approx(flagging.last_result_.score[350])


def test_loader_stream(fitted, data):
    _, test, noise = data
    images = torch.from_numpy(np.concatenate([test.images[:200], noise.images[:56]]))
    loader = DataLoader(TensorDataset(images, torch.arange(256)), batch_size=64)
    batches = list(fitted.stream(loader))
    ids = torch.cat([b[1] for b in batches]).numpy()
    assert np.mean(ids < 200) > 0.98          # noise rows are dropped
    assert len(ids) >= 180
    flagging = OODFilter.from_fitted(fitted.scorer_, encoder=SHIPPED, action="flag")
    out = list(flagging.stream(loader))
    assert len(out) == 4 and len(out[0]) == 4 and out[0][2].shape == (64,)


def test_tensor_layouts_and_normalised_input(fitted, data):
    _, test, _ = data
    hwc = test.images[:8]
    chw_uint8 = torch.from_numpy(hwc).permute(0, 3, 1, 2)
    ref = fitted.evaluate(hwc).score
    assert np.allclose(fitted.evaluate(chw_uint8).score, ref)
    assert np.allclose(fitted.evaluate(chw_uint8.float() / 255).score, ref)
    with pytest.raises(ValueError, match="Normalize"):
        fitted.evaluate((chw_uint8.float() / 255 - 0.5) / 0.25)


def test_large_photos_are_resized_for_the_cifar_encoder(fitted, data):
    """224x224 images given to the 32 px encoder: resized (with a warning), not embedded
    at native size (where every one would be flagged)."""
    from PIL import Image

    _, test, _ = data
    photos = [Image.fromarray(im).resize((224, 224), Image.BICUBIC) for im in test.images[:300]]
    filt = OODFilter.from_fitted(fitted.scorer_, encoder=SHIPPED, progress=False)
    with pytest.warns(UserWarning, match="takes 32x32 images"):
        result = filt.evaluate(photos)
    assert result.flagged_share <= 0.12
    native = fitted.evaluate(test.images[:300]).keep
    assert np.mean(result.keep == native) > 0.9


def test_from_fitted_checks_the_encoder_identity(tmp_path):
    """A scorer fitted through OODFilter remembers its encoder; from_fitted refuses
    another encoder (other weights) and warns when the scorer stores no identity."""
    import warnings

    from gaussood import GaussianScorer
    from gaussood.deep import Encoder, save_encoder

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    fitted = OODFilter(GaussianScorer(), encoder=SHIPPED, progress=False).fit(images)
    assert fitted.scorer_.provenance_["encoder_identity"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OODFilter.from_fitted(fitted.scorer_, encoder=SHIPPED, progress=False)  # same: fine
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_encoder(Encoder("small"), other)
    with pytest.raises(ValueError, match="another encoder"):
        OODFilter.from_fitted(fitted.scorer_, encoder=other, progress=False)
    bare = GaussianScorer().fit(rng.normal(size=(300, 256)))
    with pytest.warns(UserWarning, match="stores no encoder identity"):
        OODFilter.from_fitted(bare, encoder=SHIPPED, progress=False)


def test_several_layers_fit_one_detector_per_layer(tmp_path):
    """OODFilter(layer=[...]): one forward pass, the detector fitted on each layer's
    features, Fisher of their p-values; the identity names every layer; it saves."""
    import gaussood
    from gaussood import PValueCombination, gaussian_views
    from gaussood.deep import make_encoder
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(24, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    prep = {"input_size": 16, "resize": "resize", "mean": [0.5] * 3, "std": [0.25] * 3}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 400)
    test = np.concatenate([rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8),
                           np.full((5, 16, 16, 3), 255, dtype=np.uint8)])
    layers = ["2", "4"]
    filt = OODFilter(gaussian_views(random_state=0), encoder=net, layer=layers,
                     preprocessing=prep, progress=False, alpha=0.1).fit(images, y)
    detector = filt.scorer_
    assert isinstance(detector, PValueCombination) and detector.columns == [[0, 6], [6, 11]]
    assert detector.alpha_ == 0.1
    feats = make_encoder(net, layer=layers, preprocessing=prep).embed(images)
    tfeats = make_encoder(net, layer=layers, preprocessing=prep).embed(test)
    # each layer's detector is the template fitted on that layer's features alone
    for k, layer in enumerate(layers):
        alone = gaussian_views(random_state=0).fit(feats[layer], y)
        np.testing.assert_array_equal(detector.scorers_[k].pvalue(tfeats[layer]),
                                      alone.pvalue(tfeats[layer]))
    pvalues = detector.component_pvalues(np.hstack([tfeats[layer] for layer in layers]))
    result = filt.evaluate(test)
    np.testing.assert_array_equal(result.score, np.log(pvalues).sum(axis=0))
    assert filt.transform(test).shape == (65, 11)
    assert filt.scorer_.provenance_["encoder_identity"]["layer"] == layers
    gaussood.save(filt.scorer_, tmp_path / "layers.npz")
    again = OODFilter.from_fitted(gaussood.load(tmp_path / "layers.npz"), encoder=net,
                                  layer=layers, preprocessing=prep, progress=False)
    np.testing.assert_array_equal(again.evaluate(test).pvalue, result.pvalue)
    with pytest.raises(ValueError, match="another encoder"):
        OODFilter.from_fitted(again.scorer_, encoder=net, layer="4", preprocessing=prep)
    with pytest.raises(ValueError, match="fit it on images"):
        OODFilter(encoder=net, layer=layers, preprocessing=prep).fit(feats["4"])
