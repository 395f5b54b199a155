"""Training on one's own images: a folder of mixed-size PNG/JPEG files, file lists, PIL
images, arrays and Datasets, from Python and from ``gaussood train --images``."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from gaussood.cli import main  # noqa: E402
from gaussood.deep import TrainConfig, embed_images, load_encoder, train_encoder  # noqa: E402
from gaussood.deep.preprocess import training_images  # noqa: E402
from gaussood.deep.train import as_image_set  # noqa: E402

torch.set_num_threads(1)
SIZES = [(40, 30), (32, 32), (17, 50), (64, 48)]   # (width, height)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        w, h = SIZES[i % 4]
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        target = root / ("sub" if i % 3 == 0 else "") / f"im{i:02d}"
        if i % 2:
            image.save(target.with_suffix(".png"))
        else:
            image.convert("L").save(target.with_suffix(".jpg"), quality=90)
    return root


CONFIG = dict(model="small", epochs=1, batch_size=16, steps_per_epoch=2, knn_bank=24,
              knn_queries=8, resolution="16", seed=0)


def test_every_source_gives_the_same_resized_images(folder):
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    pil = [Image.open(p) for p in files]
    arrays = training_images(folder, 16)
    assert arrays.shape == (40, 16, 16, 3) and arrays.dtype == np.uint8
    assert np.array_equal(training_images([str(p) for p in files], 16), arrays)
    assert np.array_equal(training_images(pil, 16), arrays)

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return Image.open(files[i]), 0
    assert np.array_equal(training_images(Files(), 16), arrays)
    # a 16x16 image goes in unchanged; a 32x32 one is halved (shorter side, centre crop)
    same = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert np.array_equal(training_images(same, 16), same)
    flat = np.full((2, 32, 48, 3), 77, np.uint8)
    assert np.array_equal(training_images(flat, 16), np.full((2, 16, 16, 3), 77, np.uint8))
    image_set = as_image_set(folder, TrainConfig(**CONFIG))
    assert (image_set.labels == -1).all() and image_set.source.endswith("N=40")


def test_train_on_a_folder_and_embed(folder):
    result = train_encoder(folder, TrainConfig(**CONFIG), progress=False, device="cpu")
    record = result.history[-1]
    assert record["knn_top1"] is None   # no labels: no k-NN monitor
    assert set(record["proxy_auroc"]) == {"noise", "permuted", "jigsaw", "rotated", "mean"}
    feats = embed_images(result.model, folder, device="cpu")
    assert feats.shape == (40, result.model.feature_dim) and np.isfinite(feats).all()
    # arrays of PIL images train the same run (same pixels, same seed)
    pil = [Image.open(p) for p in sorted(folder.rglob("*.*"))]
    again = train_encoder(pil, TrainConfig(**CONFIG), progress=False, device="cpu")
    assert again.history[-1]["loss"] == pytest.approx(record["loss"])


def test_cli_train_images_then_embed(folder, tmp_path, capsys):
    out = tmp_path / "enc.pt"
    code = main(["train", "--images", str(folder), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "16", "--resolution", "16", "--knn-bank", "24",
                 "--knn-queries", "8", "--rotation", "negatives", "--threads", "1",
                 "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    provenance = json.loads(out.with_suffix(".json").read_text())
    assert provenance["data"]["dataset"] is None and provenance["data"]["n_train"] == 40
    assert provenance["config"]["rotation"] == "negatives"
    assert provenance["history"][-1]["proxy_auroc"]["mean"] is not None
    assert "rotated" not in provenance["history"][-1]["proxy_auroc"]   # trained on rotations
    feats = embed_images(load_encoder(out), folder, device="cpu")
    assert feats.shape[0] == 40 and np.isfinite(feats).all()
    assert main(["train", "--images", str(tmp_path / "none"), "--out", str(out)]) == 2
