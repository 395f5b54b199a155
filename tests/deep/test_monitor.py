"""The OOD-proxy monitor: proxies are made from the ID split alone, and its AUROC is what
hand-made features predict."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussood.deep import ImageSet, TrainConfig, train_encoder  # noqa: E402
from gaussood.deep.monitor import (jigsaw, noise_like, ood_proxies,  # noqa: E402
                                   permute_pixels, proxy_auroc, rotate_images)
from gaussood.deep.train import _monitors  # noqa: E402

torch.set_num_threads(1)


def half_bright(n, seed, size=16):
    """Noise in 0..59, the right half 150 brighter: a layout that every proxy breaks."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, size, size, 3)).astype(np.uint8)
    images[:, :, size // 2:] += 150
    return images


def test_proxies_are_rearrangements_or_statistics_of_the_given_images():
    images = half_bright(20, 0)
    rng = np.random.default_rng
    perm = permute_pixels(images, rng(1))
    for a, b in zip(images, perm):   # the same pixels (RGB triples), another order
        key = lambda im: np.sort(im.reshape(-1, 3).view([("", np.uint8)] * 3), axis=0)  # noqa
        assert np.array_equal(key(a), key(b)) and not np.array_equal(a, b)
    jig = jigsaw(images, rng(2), grid=4)
    for a, b in zip(images, jig):    # the same 4x4 patches, another layout
        tiles = lambda im: sorted(im[i:i + 4, j:j + 4].tobytes()  # noqa: E731
                                  for i in range(0, 16, 4) for j in range(0, 16, 4))
        assert tiles(a) == tiles(b)
    rot = rotate_images(images, rng(3))
    for a, b in zip(images, rot):
        assert any(np.array_equal(np.rot90(a, k), b) for k in (1, 2, 3))
    mid = rng(5).integers(80, 176, size=(20, 16, 16, 3)).astype(np.uint8)  # no clipping
    noise = noise_like(mid, rng(4))
    assert np.allclose(noise.mean(axis=(0, 1, 2)), mid.mean(axis=(0, 1, 2)), atol=1)
    assert np.allclose(noise.std(axis=(0, 1, 2)), mid.std(axis=(0, 1, 2)), rtol=0.03)
    a, b = ood_proxies(images, seed=5), ood_proxies(images, seed=5)
    assert list(a) == ["noise", "permuted", "jigsaw", "rotated"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert "rotated" not in ood_proxies(images, rotated=False)


def test_proxies_come_from_the_eval_split_and_no_other_dataset_is_loaded(monkeypatch):
    import gaussood.deep.data as data

    def refuse(*args, **kwargs):
        raise AssertionError("the monitor loaded a dataset")
    monkeypatch.setattr(data, "load_dataset", refuse)
    labels = np.arange(64) % 2
    train = ImageSet(half_bright(64, 0), labels, "id", ["a", "b"], "synthetic")
    test = ImageSet(half_bright(40, 1), labels[:40], "id", ["a", "b"], "synthetic")
    config = TrainConfig(model="small", epochs=2, batch_size=16, steps_per_epoch=1,
                         knn_bank=32, knn_queries=16, knn_k=5, resolution="16")
    knn, (bank, held, proxies) = _monitors(train, test, config)
    ids = [int(np.flatnonzero((test.images == h).all(axis=(1, 2, 3)))[0]) for h in held]
    assert len(set(ids)) == 16 and np.array_equal(held, test.images[ids])
    assert np.array_equal(proxies["rotated"], rotate_images(held, np.random.default_rng([0, 3])))
    assert knn[2] is not None and np.array_equal(knn[2], held)
    result = train_encoder(train, config, eval_set=test, progress=False, device="cpu")
    for record in result.history:
        aurocs = record["proxy_auroc"]
        assert set(aurocs) == {"noise", "permuted", "jigsaw", "rotated", "mean"}
        assert all(0 <= v <= 1 for v in aurocs.values())
    off = TrainConfig(**{**config.__dict__, "proxy_monitor": False, "rotation": "negatives"})
    assert _monitors(train, test, off)[1] is None


def layout_features(x):
    """Right-minus-left and bottom-minus-top brightness and mean neighbour difference."""
    x = np.asarray(x, dtype=np.float64).mean(axis=3)
    h = x.shape[1] // 2
    lr = x[:, :, h:].mean(axis=(1, 2)) - x[:, :, :h].mean(axis=(1, 2))
    tb = x[:, h:].mean(axis=(1, 2)) - x[:, :h].mean(axis=(1, 2))
    tv = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(
        axis=(1, 2))
    return np.stack([lr, tb, tv], axis=1)


def test_auroc_is_what_the_features_predict():
    bank, held = half_bright(300, 0), half_bright(150, 1)
    proxies = {**ood_proxies(held, seed=0), "fresh ID": half_bright(150, 2)}
    out = proxy_auroc(layout_features, bank, held, proxies)
    # every proxy moves the left/right contrast or the roughness far from the ID cloud
    for name in ("noise", "permuted", "jigsaw", "rotated"):
        assert out[name] > 0.95, out
    assert 0.4 < out["fresh ID"] < 0.6, out   # ID against ID: chance


def test_proxy_auroc_does_not_warn_about_the_unused_chi2_law():
    # the monitor uses scores only; a non-Gaussian bank must not warn at every epoch
    import warnings

    from gaussood.deep.monitor import proxy_auroc

    rng = np.random.default_rng(0)
    bank = rng.exponential(size=(600, 8)) ** 3           # far from Gaussian after L2
    held = rng.exponential(size=(200, 8)) ** 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = proxy_auroc(lambda x: x, bank, held, {"shifted": held + 5.0})
    assert set(out) == {"shifted", "mean"} and 0.0 <= out["shifted"] <= 1.0
