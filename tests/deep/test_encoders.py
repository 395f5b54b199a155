"""Every encoder kind of gaussood.deep.make_encoder, identity, and the errors it gives."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torch import nn  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from gaussood.deep import Encoder, embed_images, make_encoder, save_encoder  # noqa: E402
from gaussood.deep.augment import eval_transform  # noqa: E402
from gaussood.deep.checkpoint import atomic_torch_save, encoder_payload  # noqa: E402

SMALL = {"input_size": 32, "resize": "resize", "mean": [0.5] * 3, "std": [0.25] * 3}


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


def images(n=5, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_gaussood_file_and_object(tmp_path):
    torch.manual_seed(0)
    model = Encoder("small").eval()
    save_encoder(model, tmp_path / "enc.pt")
    x = images()
    with torch.no_grad():
        h, z = model(eval_transform(torch.from_numpy(x).permute(0, 3, 1, 2)))
    from_file = make_encoder(tmp_path / "enc.pt", device="cpu")
    np.testing.assert_allclose(from_file.embed(x), h.numpy(), atol=1e-5)
    np.testing.assert_allclose(embed_images(model, x, layer="head"), z.numpy(), atol=1e-5)
    assert from_file.identity() == make_encoder(model).identity()
    assert from_file.identity() != make_encoder(model, layer="head").identity()
    json.dumps(from_file.identity())
    # 224 px photos given to a 32 px encoder: resized to 32 (shorter side, centre crop), warned
    big = np.repeat(np.repeat(x, 7, axis=1), 7, axis=2)
    with pytest.warns(UserWarning, match="takes 32x32 images.*224x224"):
        feats = from_file.embed(big)
    assert np.corrcoef(feats.ravel(), h.numpy().ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="backbone"):
        make_encoder(model, layer="fc")


def test_file_never_builds_a_named_model(tmp_path):
    payload = encoder_payload(Encoder("small"))
    payload["config"] = {"model": "evilpkg.mod:factory", "proj_dim": 128}
    atomic_torch_save(payload, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evilpkg"):
        make_encoder(tmp_path / "evil.pt")
    assert "evilpkg" not in sys.modules
    torch.save(tiny_net().state_dict(), tmp_path / "state.pt")
    with pytest.raises(ValueError, match="torchvision:NAME"):
        make_encoder(tmp_path / "state.pt")


def test_module_layers():
    net = tiny_net().eval()
    x = images(3)
    prep = dict(SMALL)
    t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        flat = net[:4](t)
        penult = net[:6](t)
        out = net(t)
    enc = make_encoder(net, preprocessing=prep)
    assert enc.layer == "6:input"                        # input of the last Linear
    np.testing.assert_allclose(enc.embed(x), penult.numpy(), atol=1e-5)
    np.testing.assert_allclose(make_encoder(net, layer="output", preprocessing=prep).embed(x),
                               out.numpy(), atol=1e-5)
    np.testing.assert_allclose(make_encoder(net, layer="3", preprocessing=prep).embed(x),
                               flat.numpy(), atol=1e-5)
    # a 4-D feature map (N, 8, 2, 2) is pooled to its 8 channel means; ":flatten" keeps all
    with torch.no_grad():
        fmap = net[:3](t)
    np.testing.assert_allclose(make_encoder(net, layer="2", preprocessing=prep).embed(x),
                               fmap.mean(dim=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(make_encoder(net, layer="2:flatten", preprocessing=prep).embed(x),
                               flat.numpy(), atol=1e-6)
    assert make_encoder(net, layer="2:flatten", preprocessing=prep).identity()["layer"] \
        == "2:flatten"
    with pytest.raises(ValueError, match="no layer 'avgpool'"):
        make_encoder(net, layer="avgpool", preprocessing=prep)
    assert not net._forward_hooks and not net[6]._forward_pre_hooks   # hooks removed
    with pytest.warns(UserWarning, match="No preprocessing given"):
        make_encoder(net)


def test_torchvision_models(tmp_path):
    prep = {"input_size": 64, "resize": "resize_crop", "resize_size": 72,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    with pytest.warns(UserWarning, match="random"):
        rand = make_encoder("torchvision:resnet18", preprocessing=prep, device="cpu")
    assert rand.layer == "fc:input"
    torch.save(rand.model.state_dict(), tmp_path / "r18.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # a weights file: no warning
        loaded = make_encoder("torchvision:resnet18", weights=tmp_path / "r18.pth",
                              preprocessing=prep, device="cpu")
        default = make_encoder("torchvision:resnet18", weights=tmp_path / "r18.pth")
    assert default.preprocessing["input_size"] == [224, 224]
    assert default.preprocessing["resize_size"] == 256
    x = [images(1, 80)[0], images(1, 50, seed=1)[0][:, :40]]
    np.testing.assert_allclose(loaded.embed(x), rand.embed(x), atol=1e-5)
    assert loaded.embed(x).shape == (2, 512)
    assert loaded.identity() == rand.identity()
    pooled = make_encoder(rand.model, layer="avgpool", preprocessing=prep)
    np.testing.assert_allclose(pooled.embed(x), rand.embed(x), atol=1e-5)
    assert pooled.identity()["layer"] == "avgpool"
    assert pooled.identity()["weights_sha256"] == rand.identity()["weights_sha256"]
    torch.save(tiny_net().state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="do not fit ResNet"):
        make_encoder("torchvision:resnet18", weights=tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="did you mean resnet18"):
        make_encoder("torchvision:resnet81")
    with pytest.raises(ValueError, match="weights= goes with"):
        make_encoder(tiny_net(), weights=tmp_path / "r18.pth")


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_and_import_spec(tmp_path, monkeypatch):
    net = tiny_net().eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "net.ts")
    x = images(4)
    script = make_encoder(tmp_path / "net.ts", preprocessing=SMALL)
    assert script.kind == "torchscript" and script.layer == "output"
    np.testing.assert_allclose(script.embed(x),
                               make_encoder(net, layer="output", preprocessing=SMALL).embed(x),
                               atol=1e-5)
    with pytest.raises(ValueError, match="TorchScript"):
        make_encoder(tmp_path / "net.ts", layer="3", preprocessing=SMALL)
    (tmp_path / "my_factory_mod.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 6), nn.Linear(6, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    enc = make_encoder("my_factory_mod:build", preprocessing=SMALL)
    assert enc.layer == "2:input" and enc.embed(x).shape == (4, 6)
    with pytest.raises(FileNotFoundError, match="package.module:factory"):
        make_encoder("no/such/file.pt")


def test_callables_batch_size_and_errors():
    calls = []

    def raw(batch):
        calls.append(batch.shape)
        return batch.reshape(len(batch), -1)[:, :5].astype(np.float32)

    enc = make_encoder(raw, batch_size=7)
    assert enc.embed(images(20, 8)).shape == (20, 5)
    assert [c[0] for c in calls] == [7, 7, 6] and calls[0][1:] == (8, 8, 3)
    calls.clear()
    make_encoder(raw).embed(images(20, 8), batch_size=8)
    assert max(c[0] for c in calls) == 8

    seen = []

    def tensor_fn(x):
        seen.append((x.dtype, tuple(x.shape)))
        return x.mean(dim=(2, 3))

    tfm = v2.Compose([v2.Resize(20), v2.CenterCrop(16), v2.ToDtype(torch.float32, scale=True)])
    enc = make_encoder(tensor_fn, preprocessing=tfm, batch_size=2)
    feats = enc.embed([images(1, 40)[0], images(1, 24)[0][:, :20], images(1, 16)[0]])
    assert feats.shape == (3, 3) and seen[0] == (torch.float32, (2, 3, 16, 16))
    assert enc.identity()["preprocessing"]["transform"].startswith("Compose")
    with pytest.raises(TypeError, match="ToDtype"):
        make_encoder(tensor_fn, preprocessing=v2.Resize(8)).embed(images(2))

    with pytest.raises(ValueError, match=r"one row per image.*\(3, d\)"):
        make_encoder(lambda b: np.zeros((1, 4))).embed(images(3))
    with pytest.raises(ValueError, match="non-finite"):
        make_encoder(lambda b: np.full((len(b), 2), np.nan)).embed(images(3))
    with pytest.raises(ValueError, match="not an \\(N, d\\) array"):
        make_encoder(lambda b: (b, b)).embed(images(3))
    conv = nn.Sequential(nn.Conv2d(3, 4, 7), nn.Flatten())
    tiny = {"input_size": None, "resize": "none"}
    with pytest.raises(ValueError, match="too small"):
        make_encoder(conv, layer="output", preprocessing=tiny).embed(images(2, 4))
    with pytest.raises(TypeError, match="torch.nn.Module or a callable"):
        make_encoder(42)


def test_out_memmap_and_empty(tmp_path):
    enc = make_encoder(lambda b: b.reshape(len(b), -1)[:, :3].astype(np.float32), batch_size=4)
    x = images(10, 6)
    ref = enc.embed(x)
    got = enc.embed(x, out=tmp_path / "sub" / "e.npy")
    assert isinstance(got, np.memmap) and got.shape == (10, 3)
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "e.npy"), ref)
    stream = (torch.from_numpy(x[i:i + 3]) for i in range(0, 10, 3))   # unknown length
    np.testing.assert_array_equal(enc.embed(stream, out=tmp_path / "s.npy"), ref)
    assert enc.embed(x[:0]).shape == (0, 0)
    assert not list(Path(tmp_path).glob("**/*.partial"))


def test_several_layers_in_one_forward_pass(tmp_path):
    """layer=[...]: a dict of features by layer, equal to one encoder per layer, from one
    forward pass per batch that stops once the last hooked layer has fired."""
    net = tiny_net().eval()
    x = images(7)
    layers = ["2", "4", "6:input"]
    enc = make_encoder(net, layer=layers, preprocessing=SMALL, batch_size=3)
    calls = {"conv": 0, "last": 0}
    net[0].register_forward_pre_hook(lambda *a: calls.__setitem__("conv", calls["conv"] + 1))
    net[6].register_forward_hook(lambda *a: calls.__setitem__("last", calls["last"] + 1))
    got = enc.embed(x)
    assert list(got) == layers and enc.layers == tuple(layers)
    assert calls == {"conv": 3, "last": 0}   # 3 batches, one pass each, stopped before fc
    for layer in layers:
        np.testing.assert_array_equal(
            got[layer], make_encoder(net, layer=layer, preprocessing=SMALL, batch_size=3).embed(x))
    assert got["2"].shape == (7, 8)           # pooled feature map
    assert enc.identity()["layer"] == tuple(layers)
    assert json.loads(json.dumps(enc.identity()))["layer"] == layers
    both = make_encoder(net, layer=["4", "output"], preprocessing=SMALL).embed(x)
    np.testing.assert_array_equal(both["output"], make_encoder(
        net, layer="output", preprocessing=SMALL).embed(x))
    flip = make_encoder(net, layer=["4", "2"], preprocessing=SMALL, views="flip",
                        batch_size=3).embed(x)
    np.testing.assert_allclose(flip["2"], make_encoder(
        net, layer="2", preprocessing=SMALL, views="flip").embed(x), atol=1e-6)
    out = {"2": tmp_path / "a.npy", "6:input": tmp_path / "b.npy", "4": tmp_path / "c.npy"}
    written = enc.embed(x, out=out)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), got["6:input"])
    assert isinstance(written["4"], np.memmap)
    with pytest.raises(ValueError, match="out must be a dict"):
        enc.embed(x, out=tmp_path / "one.npy")
    with pytest.raises(ValueError, match="distinct names"):
        make_encoder(net, layer=["2", "2"], preprocessing=SMALL)
    with pytest.raises(ValueError, match="no layer '9'"):
        make_encoder(net, layer=["2", "9"], preprocessing=SMALL)
    assert make_encoder(net, layer=["4"], preprocessing=SMALL).layer == "4"
    from gaussood.deep import extract_embeddings
    with pytest.raises(ValueError, match="caches one layer"):
        extract_embeddings(net, x, layer=layers, preprocessing=SMALL, cache_dir=tmp_path)
    assert not net[2]._forward_hooks and not net[6]._forward_pre_hooks  # hooks removed
    # a gaussood encoder: backbone and head from its one forward
    torch.manual_seed(0)
    model = Encoder("small").eval()
    pair = make_encoder(model, layer=("backbone", "head"), device="cpu").embed(x)
    for layer in ("backbone", "head"):
        np.testing.assert_array_equal(pair[layer], make_encoder(
            model, layer=layer, device="cpu").embed(x))
