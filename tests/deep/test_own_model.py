"""The new user's path: a torchvision model in OODFilter, fitted on a folder of photos of
mixed sizes and modes (crops of scikit-image's bundled photos), then filtering PIL images,
a Dataset of PIL images and a stream of PIL batches. No glue code."""

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from gaussood import GaussianScorer, OODFilter  # noqa: E402

MODES = ("RGB", "L", "RGBA", "P")
FORMATS = {"RGB": ("jpg", "png", "webp", "bmp", "tiff"), "L": ("jpg", "png", "bmp", "tiff"),
           "RGBA": ("png", "webp", "tiff"), "P": ("png", "bmp", "tiff")}
SMALL_INPUT = {"input_size": 64, "resize": "resize_crop", "resize_size": 72,
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def photos():
    root = Path(skimage_data.__file__).parent
    out = []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() in (".png", ".jpg"):
            try:
                with Image.open(path) as img:
                    img.load()
                    if min(img.size) >= 128:
                        out.append(img.convert("RGB"))
            except OSError:
                continue
    if len(out) < 8:
        pytest.skip("scikit-image's bundled photos not found")
    return out


def crops(n, seed):
    """n random crops (48-160 px sides, mixed aspect) in random modes."""
    rng = np.random.default_rng(seed)
    base = photos()
    images = []
    for _ in range(n):
        photo = base[rng.integers(len(base))]
        w, h = (min(int(s), d) for s, d in zip(rng.integers(48, 161, 2), photo.size))
        left, top = rng.integers(0, photo.size[0] - w + 1), rng.integers(0, photo.size[1] - h + 1)
        images.append(photo.crop((left, top, left + w, top + h)).convert(MODES[rng.integers(4)]))
    return images


def write_folder(root, images, seed=0):
    rng = np.random.default_rng(seed)
    for i, img in enumerate(images):
        ext = FORMATS[img.mode][rng.integers(len(FORMATS[img.mode]))]
        sub = root / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        img.save(sub / f"img{i:05d}.{ext}")
    return root


class PILItems(Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i


def test_torchvision_model_on_a_folder_then_pil_images_fast(tmp_path):
    folder = write_folder(tmp_path / "id", crops(240, seed=0))
    model = torchvision.models.resnet18()        # random weights: the path, not the quality
    filt = OODFilter(GaussianScorer(random_state=0), encoder=model, alpha=0.05,
                     preprocessing=SMALL_INPUT, batch_size=64, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no warning on this path
        filt.fit(folder)
    assert filt.n_features_in_ == 512
    test = crops(80, seed=1)
    kept, result = filt.filter(test)
    assert len(kept) == int(result.keep.sum()) and all(isinstance(k, Image.Image) for k in kept)
    assert result.flagged_share <= 0.2
    paths, res = filt.filter(folder)
    assert len(res.paths) == 240 and set(paths) <= set(res.paths)
    np.testing.assert_allclose(filt.evaluate(folder).score, res.score)
    items = PILItems(test[:50])
    keep = filt.evaluate(test[:50]).keep
    assert filt.subset(items).indices == np.flatnonzero(keep).tolist()
    assert filt.last_result_.keep.tolist() == keep.tolist()
    loader = DataLoader(items, batch_size=16,
                        collate_fn=lambda b: ([x for x, _ in b], [i for _, i in b]))
    ids = [i for _, idx in filt.stream(loader) for i in idx]
    assert ids == np.flatnonzero(keep).tolist()
    flagged = OODFilter.from_fitted(filt.scorer_, encoder=filt.image_encoder_, action="flag")
    x, i, score, pvalue = flagged.subset(items)[3]
    assert isinstance(x, Image.Image) and i == 3 and float(pvalue) == pytest.approx(
        flagged.last_result_.pvalue[3])


@pytest.mark.slow
def test_new_user_path_flags_alpha_of_id_photos(tmp_path):
    """A folder of 2,500 ID photos of mixed sizes, modes and formats; a torchvision
    ResNet-18 (random init, seed 0) with its default (ImageNet) preprocessing, fitted on
    1,500 of the files; the other 1,000 files opened as PIL images and filtered.

    Fit and held-out photos go through the same kind of files (lossy formats change the
    pixels), so they are exchangeable, as in a user's own folder. One split's flagged
    share varies by about 1 point (binomial noise at 1,000 rows plus the split), so the
    calibration itself is checked on 20 random re-splits of the same 2,500 photos (their
    embeddings reused): mean 5 +/- 1%, every split in [2%, 8%]. Measured when written:
    the fixed split 2.9%; 30 random splits 4.7% mean (sd 0.8, range 3.2-6.0%)."""
    images = crops(2500, seed=0)
    fit_folder = write_folder(tmp_path / "id" / "fit", images[:1500])
    held = write_folder(tmp_path / "id" / "held", images[1500:], seed=1)
    held_images = []
    for path in sorted(held.rglob("*.*")):
        with Image.open(path) as img:
            img.load()
            held_images.append(img.copy())
    assert len(held_images) == 1000
    torch.manual_seed(0)                                     # the random-init weights
    filt = OODFilter(GaussianScorer(random_state=0), encoder=torchvision.models.resnet18(),
                     alpha=0.05)
    filt.fit(fit_folder)
    kept, result = filt.filter(held_images)
    assert len(kept) == int(result.keep.sum())
    assert filt.scorer_.calibration_ == "cv+"                # d / n = 512 / 1,500
    assert 0.02 <= result.flagged_share <= 0.08
    Z = np.vstack([filt.embed(fit_folder), filt.embed(held_images)])
    rng = np.random.default_rng(0)
    shares = []
    for r in range(20):
        order = rng.permutation(Z.shape[0])
        refit = OODFilter(GaussianScorer(random_state=r), alpha=0.05, progress=False)
        refit.fit(Z[order[:1500]])
        shares.append(refit.evaluate(Z[order[1500:]]).flagged_share)
    print(f"new-user path: {result.flagged_share:.2%} of 1,000 held-out ID photos flagged; "
          f"20 re-splits: mean {np.mean(shares):.2%}, range {min(shares):.2%}-{max(shares):.2%}")
    assert 0.04 <= np.mean(shares) <= 0.06
    assert 0.02 <= min(shares) and max(shares) <= 0.08
